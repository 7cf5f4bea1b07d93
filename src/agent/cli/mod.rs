//! `gse-agent`'s subcommands, each a function the binary calls with its parsed arguments and
//! whose exit code it returns: [`serve`] (`run`), [`check_config`], [`unpack`], [`validate`],
//! [`status`] and [`chaos`]. What they print goes to stdout; what went wrong, to stderr.

/// `eprintln!` that never panics: a closed or full stderr costs the line, not the exit code.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `println!` that never panics (`gse-agent … | head` must not end in a panic).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod check;
mod serve;
mod status;
mod unpack;
mod validate;

pub use check::check_config;
pub use serve::{ServeError, serve};
pub use status::{chaos, status};
pub use unpack::unpack;
pub use validate::validate;

pub use crate::common::describe::describe;

/// Exit code for a configuration that cannot be used, and for bad usage (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

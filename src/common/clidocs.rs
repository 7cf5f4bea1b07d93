//! Man pages and shell completions, generated from a binary's own clap definition so they can
//! never drift from its options. `gse-agent generate-docs DIR` and `gse-control generate-docs
//! DIR` ([`hook`], checked before clap parses the command line, so it is in no man page and no
//! completion) call [`write()`]; `.ci/package` runs them before `cargo deb` packs the files.
//!
//! Layout under `DIR`: `man/<bin>.1` and `man/<bin>-<subcommand>.1` (roff, uncompressed;
//! `cargo deb` gzips them), `completions/<bin>.bash`, `completions/_<bin>` (zsh) and
//! `completions/<bin>.fish`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Which step of writing the documentation failed.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// The output directory (or its `man`/`completions` folder) could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A man page could not be written.
    #[error("cannot write the man pages into {path}: {source}")]
    WriteMan {
        /// The `man` directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A completion script could not be written.
    #[error("cannot write the {shell} completions into {path}: {source}")]
    WriteCompletions {
        /// The shell.
        shell: Shell,
        /// The `completions` directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn create_dir(path: PathBuf) -> Result<PathBuf, DocsError> {
    std::fs::create_dir_all(&path).map_err(|source| DocsError::CreateDir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The word that asks a binary for its documentation: `<bin> generate-docs DIR`.
pub const SUBCOMMAND: &str = "generate-docs";

/// The directory of a `<bin> generate-docs DIR` command line (`args` as from
/// [`std::env::args_os`]), or `None` for any other command line.
pub fn requested(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let mut args = args.into_iter().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(word), Some(dir), None) if word == SUBCOMMAND => Some(PathBuf::from(dir)),
        _ => None,
    }
}

/// Packaging's hook, for a binary's `main` before it parses its command line: when the process
/// was started as `<bin> generate-docs DIR`, writes the documentation of `cmd()` into `DIR`,
/// prints the files written, and returns the exit code; otherwise `None`.
pub fn hook(cmd: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    use std::io::Write as _;
    let dir = requested(std::env::args_os())?;
    let cmd = cmd();
    let name = cmd.get_name().to_owned();
    Some(match write(cmd, &dir) {
        Ok(files) => {
            let mut out = std::io::stdout().lock();
            for file in files {
                let _ = writeln!(out, "{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{name} {SUBCOMMAND}: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Writes the man pages of `cmd` and each visible subcommand, and its completions for
/// [`SHELLS`], under `dir`; returns the files written.
pub fn write(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let name = cmd.get_name().to_owned();
    let man = create_dir(dir.join("man"))?;
    let completions = create_dir(dir.join("completions"))?;
    clap_mangen::generate_to(cmd.clone(), &man).map_err(|source| DocsError::WriteMan {
        path: man.clone(),
        source,
    })?;
    let mut written = Vec::new();
    for shell in SHELLS {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &completions)
            .map_err(|source| DocsError::WriteCompletions {
                shell,
                path: completions.clone(),
                source,
            })?;
        written.push(path);
    }
    // Only this command's pages: several binaries may write into one directory.
    let ours = |path: &Path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".1"))
            .is_some_and(|n| n == name || n.starts_with(&format!("{name}-")))
    };
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
        })
        .map_err(|source| DocsError::WriteMan {
            path: man.clone(),
            source,
        })?;
    pages.retain(|p| ours(p));
    pages.sort();
    written.splice(0..0, pages);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .version("1.2.3")
            .about("Does things")
            .subcommand(
                clap::Command::new("run")
                    .about("Runs it")
                    .arg(clap::Arg::new("config").long("config")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn writes_a_page_per_visible_subcommand_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let written = write(sample(), dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/tool-run.1",
                "man/tool.1",
                "completions/tool.bash",
                "completions/_tool",
                "completions/tool.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/tool-run.1")).unwrap();
        assert!(page.contains("Runs it"), "{page}");
        assert!(page.contains("config"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/tool.bash")).unwrap();
        assert!(bash.contains("--config"), "{bash}");
        assert!(!dir.path().join("man/tool-secret.1").exists());
    }

    #[test]
    fn only_generate_docs_with_one_directory_is_the_hook() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            requested(args(&["gse-agent", "generate-docs", "out"])),
            Some(PathBuf::from("out"))
        );
        assert_eq!(requested(args(&["gse-agent", "generate-docs"])), None);
        assert_eq!(
            requested(args(&["gse-agent", "generate-docs", "a", "b"])),
            None
        );
        assert_eq!(
            requested(args(&["gse-agent", "run", "generate-docs"])),
            None
        );
        assert_eq!(requested(args(&["gse-agent"])), None);
    }

    #[test]
    fn lists_only_its_own_pages_in_a_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(
            clap::Command::new("other").subcommand(clap::Command::new("go")),
            dir.path(),
        )
        .unwrap();
        let written = write(sample(), dir.path()).unwrap();
        assert!(
            written
                .iter()
                .all(|p| !p.display().to_string().contains("other")),
            "{written:?}"
        );
        assert!(dir.path().join("man/other-go.1").is_file());
    }

    #[test]
    fn an_unwritable_directory_names_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = write(sample(), &file).unwrap_err();
        assert!(matches!(err, DocsError::CreateDir { .. }), "{err}");
    }
}

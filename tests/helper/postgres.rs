//! A throwaway PostgreSQL from Debian's `postgresql` package: `initdb` and `pg_ctl` on a free
//! port (as the `postgres` user when the tests run as root), removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::process::CommandExt;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// `postgres://gse@127.0.0.1:<port>/postgres`.
    pub url: String,
}

/// The newest installed server's bin directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

impl Postgres {
    /// Starts a new server; returns once it accepts connections.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("the postgres user (Debian's postgresql package makes it)");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let mut pg = Postgres {
            url: String::new(),
            bin: bin_dir(),
            dir,
            owner,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "gse",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // A free port can be taken by a neighbour test between our look and the server's bind:
        // then the server says so in its log and we try another.
        for attempt in 1.. {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400",
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("server.log");
            let _ = std::fs::remove_file(&log);
            let started = pg.try_run(
                "pg_ctl",
                &[
                    "-D",
                    &pg.data(),
                    "-o",
                    &options,
                    "-l",
                    &log.display().to_string(),
                    "-w",
                    "start",
                ],
            );
            match started {
                Ok(()) => {
                    pg.url = format!("postgres://gse@127.0.0.1:{port}/postgres");
                    break;
                }
                Err(e) if attempt < 5 && e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.current_dir(self.dir.path());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        if let Err(e) = self.try_run(tool, args) {
            panic!("{e}");
        }
    }

    /// Runs one of the server's tools; on failure, what it and the server's log said.
    fn try_run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(&self.bin.join(tool))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{tool} failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        ))
    }

    /// Runs one SQL statement with psql; the rows, each a list of columns.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-F", "\t", "-d", &self.url, "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// One value of a one-row, one-column query.
    pub fn scalar(&self, sql: &str) -> String {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default()
    }
}

impl Postgres {
    /// Stops the server at once (as a crash would), for tests of a database that is gone.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command(&self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

//! Will the kernel run this LaunchPath? An ELF for this machine, or a script whose interpreter
//! exists (and whose `#!` line has no CR).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The ELF machine of this build of the agent.
fn host_machine() -> Option<(u16, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some((62, "x86-64")),
        "aarch64" => Some((183, "AArch64")),
        "x86" => Some((3, "x86")),
        "arm" => Some((40, "ARM")),
        "riscv64" => Some((243, "RISC-V")),
        _ => None,
    }
}

fn machine_name(m: u16) -> String {
    match m {
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        3 => "x86".into(),
        40 => "ARM".into(),
        243 => "RISC-V".into(),
        8 => "MIPS".into(),
        other => format!("machine {other}"),
    }
}

/// Checks `program`; `Ok` carries a short description (`ELF x86-64`, `script for /bin/sh`).
pub fn check(program: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(program).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", program.display()),
        _ => format!("{} cannot be read: {e}", program.display()),
    })?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", program.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not executable (mode {:o}); set the x bit in the package",
            program.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("{} cannot be read: {e}", program.display()))?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        if head.len() < 20 {
            return Err(format!("{} is a truncated ELF file", program.display()));
        }
        let little = head[5] == 1;
        let machine = if little {
            u16::from_le_bytes([head[18], head[19]])
        } else {
            u16::from_be_bytes([head[18], head[19]])
        };
        return match host_machine() {
            Some((want, name)) if want != machine => Err(format!(
                "{} is an ELF for {}, but this host is {name}",
                program.display(),
                machine_name(machine)
            )),
            _ => Ok(format!("ELF {}", machine_name(machine))),
        };
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if line.ends_with(b"\r") {
            return Err(format!(
                "{} has a Windows (CRLF) line ending in its #! line; the kernel looks for an interpreter named with a trailing CR. Convert it (dos2unix)",
                program.display()
            ));
        }
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let interpreter = words
            .next()
            .ok_or_else(|| format!("{} has an empty #! line", program.display()))?;
        if !Path::new(interpreter).is_file() {
            return Err(format!(
                "{}: its interpreter {interpreter} does not exist on this host",
                program.display()
            ));
        }
        if interpreter.ends_with("/env")
            && let Some(cmd) = words.next()
        {
            let found = [
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
                "/usr/local/sbin",
                "/usr/sbin",
                "/sbin",
            ]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file());
            if !found {
                return Err(format!(
                    "{}: `env {cmd}` finds no {cmd} on the agent's PATH",
                    program.display()
                ));
            }
            return Ok(format!("script for {cmd}"));
        }
        return Ok(format!("script for {interpreter}"));
    }
    Err(format!(
        "{} is neither an ELF executable nor a script with a #! line",
        program.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn accepts_host_elf_and_scripts() {
        let me = std::env::current_exe().unwrap();
        assert!(check(&me).unwrap().starts_with("ELF"), "{:?}", check(&me));
        let dir = tempfile::tempdir().unwrap();
        let sh = write(dir.path(), "run.sh", b"#!/bin/sh\necho\n", 0o755);
        assert_eq!(check(&sh).unwrap(), "script for /bin/sh");
    }

    #[test]
    fn names_each_mistake() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases = [
            (write(d, "crlf", b"#!/bin/sh\r\necho\r\n", 0o755), "CRLF"),
            (
                write(d, "noexec", b"#!/bin/sh\n", 0o644),
                "is not executable",
            ),
            (
                write(d, "nointerp", b"#!/opt/nothing/python9\n", 0o755),
                "does not exist on this host",
            ),
            (write(d, "data", b"hello", 0o755), "neither an ELF"),
            (
                write(d, "env", b"#!/usr/bin/env no-such-tool-gse\n", 0o755),
                "finds no no-such-tool-gse",
            ),
        ];
        for (path, needle) in cases {
            let err = check(&path).unwrap_err();
            assert!(err.contains(needle), "{}: {err}", path.display());
        }
        let mut foreign = b"\x7fELF\x02\x01\x01".to_vec();
        foreign.resize(18, 0);
        foreign.extend_from_slice(&8u16.to_le_bytes()); // MIPS
        let p = write(d, "mips", &foreign, 0o755);
        assert!(
            check(&p).unwrap_err().contains("an ELF for MIPS"),
            "{:?}",
            check(&p)
        );
        assert!(
            check(&d.join("missing"))
                .unwrap_err()
                .contains("does not exist")
        );
    }
}

use std::cell::RefCell;
use std::process::Command;

use super::*;

/// Records the calls; fails the one named in `fail`.
#[derive(Default)]
struct Recording {
    calls: RefCell<Vec<String>>,
    fail: Option<&'static str>,
    root: bool,
}

impl Recording {
    fn call(&self, name: &'static str, what: String) -> Result<(), Errno> {
        self.calls.borrow_mut().push(what);
        if self.fail == Some(name) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl Kernel for Recording {
    fn unshare_mounts(&self) -> Result<(), Errno> {
        self.call("unshare", "unshare".into())
    }
    fn make_private(&self) -> Result<(), Errno> {
        self.call("private", "private".into())
    }
    fn bind(&self, source: &CStr, target: &CStr) -> Result<(), Errno> {
        self.call("bind", format!("bind {source:?} {target:?}"))
    }
    fn is_root(&self) -> bool {
        self.root
    }
    fn clear_groups(&self) -> Result<(), Errno> {
        self.call("groups", "groups".into())
    }
    fn set_gid(&self, gid: Gid) -> Result<(), Errno> {
        self.call("gid", format!("gid {gid}"))
    }
    fn set_uid(&self, uid: Uid) -> Result<(), Errno> {
        self.call("uid", format!("uid {uid}"))
    }
}

#[test]
fn the_child_mounts_first_and_drops_to_the_user_last() {
    let k = Recording {
        root: true,
        ..Default::default()
    };
    let plan = Plan::new(Path::new("/srv/data/game"), Some((1000, 100))).unwrap();
    enter(&k, &plan).unwrap();
    assert_eq!(
        k.calls(),
        [
            "unshare",
            "private",
            r#"bind "/srv/data/game" "/local/game""#,
            "groups",
            "gid 100",
            "uid 1000"
        ]
    );
}

#[test]
fn without_a_user_nothing_is_switched_and_a_non_root_parent_keeps_its_groups() {
    let k = Recording::default();
    enter(&k, &Plan::new(Path::new("/g"), None).unwrap()).unwrap();
    assert_eq!(
        k.calls(),
        ["unshare", "private", r#"bind "/g" "/local/game""#]
    );
    let k = Recording::default();
    enter(&k, &Plan::new(Path::new("/g"), Some((7, 8))).unwrap()).unwrap();
    assert_eq!(k.calls()[3..], ["gid 8", "uid 7"]);
}

#[test]
fn a_failed_step_ends_the_child_before_anything_later() {
    for (fail, done) in [("unshare", 1), ("private", 2), ("bind", 3)] {
        let k = Recording {
            fail: Some(fail),
            root: true,
            ..Default::default()
        };
        let plan = Plan::new(Path::new("/g"), Some((1, 1))).unwrap();
        assert_eq!(enter(&k, &plan), Err(Errno::EPERM), "{fail}");
        assert_eq!(k.calls().len(), done, "{fail}: {:?}", k.calls());
    }
}

#[test]
fn the_probe_says_why_a_namespace_is_refused() {
    let k = Recording {
        fail: Some("unshare"),
        ..Default::default()
    };
    let e = probe(&k).unwrap_err();
    assert!(matches!(e, LocalGameError::Unshare(Errno::EPERM)), "{e}");
    assert!(e.to_string().contains("not root"), "{e}");
    let e = LocalGameError::Unshare(Errno::EINVAL).to_string();
    assert!(e.contains("no mount namespaces"), "{e}");
    let k = Recording {
        fail: Some("private"),
        ..Default::default()
    };
    assert!(matches!(probe(&k), Err(LocalGameError::Private(_))));
}

#[test]
fn only_a_build_elsewhere_needs_a_namespace() {
    assert!(!needs_namespace(Path::new("/local/game")));
    assert!(!needs_namespace(Path::new("/local/game/")));
    assert!(needs_namespace(Path::new("/srv/gse/game")));
    assert!(needs_namespace(Path::new("/local/game/fleet-a")));
}

#[test]
fn a_path_with_a_nul_byte_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let bad = Path::new(std::ffi::OsStr::from_bytes(b"/a\0b"));
    assert!(matches!(Plan::new(bad, None), Err(LocalGameError::Nul(_))));
}

/// As root (CI and this machine): a confined child sees its own root at /local/game, the host
/// does not, and a run-as user still gets it.
#[test]
fn a_confined_child_sees_its_root_at_local_game() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mount namespaces need root (CI runs the tests as root)");
        return;
    }
    let Support::Private = support() else {
        panic!("root without mount namespaces: {:?}", support());
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    std::fs::write(dir.path().join(&marker), "mine").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!("cat /local/game/{marker}; echo; id -u");
    for (user, uid) in [(None, "0"), (Some((65534, 65534)), "65534")] {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", &script]);
        assert!(confine(&mut cmd, Some(dir.path()), user).unwrap());
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("mine\n{uid}\n"), "{out:?}");
    }
    assert!(!Path::new(GSE_GAME_ROOT).join(&marker).exists());
    // A root that is /local/game itself gets no namespace.
    let mut cmd = Command::new("/bin/true");
    assert!(!confine(&mut cmd, Some(Path::new(GSE_GAME_ROOT)), None).unwrap());
}

#[test]
fn a_link_into_local_game_is_followed_into_the_childs_build() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/server"), "").unwrap();
    let link =
        |name: &str, target: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    // As install.sh makes them for a GSE build.
    link("server", "/local/game/bin/server");
    link("again", "server");
    link("env", "/usr/bin/env");
    link("loop", "loop");
    assert_eq!(seen_at(&root.join("server"), root), root.join("bin/server"));
    assert_eq!(seen_at(&root.join("again"), root), root.join("bin/server"));
    assert_eq!(
        seen_at(&root.join("env"), root),
        PathBuf::from("/usr/bin/env")
    );
    assert_eq!(
        seen_at(&root.join("bin/server"), root),
        root.join("bin/server")
    );
    // A loop ends where the kernel gives up; the caller's check says what is wrong there.
    assert_eq!(seen_at(&root.join("loop"), root), root.join("loop"));
}

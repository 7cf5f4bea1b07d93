//! The unzip rules' unit tests (the hostile-zip corpus is in package/tests.rs).

use super::*;

#[test]
fn names_are_checked() {
    let ok = |n: &str| safe_path(n.as_bytes(), n);
    assert_eq!(ok("a/b.txt").unwrap(), Path::new("a/b.txt"));
    assert_eq!(ok("./a//b/").unwrap(), Path::new("a/b"));
    for (name, rule) in [
        ("/etc/passwd", "absolute path"),
        ("a/../../x", "'..' in path"),
        ("..", "'..' in path"),
        ("a\\..\\x", "backslash"),
        ("C:/x", "drive-letter path"),
        ("a\u{1}b", "control character"),
        ("a\nb", "control character"),
        ("", "empty name"),
        ("./", "names the root itself"),
    ] {
        let err = ok(name).unwrap_err();
        assert!(err.starts_with(rule), "{name:?}: {err}");
    }
    assert_eq!(safe_path(b"a\0b", "a"), Err("NUL byte in name"));
}

#[test]
fn symlink_targets_must_stay_inside() {
    let link = Path::new("bin/run");
    assert!(symlink_stays_inside(link, "../lib/x").is_ok());
    assert!(symlink_stays_inside(link, "./x").is_ok());
    assert_eq!(
        symlink_stays_inside(link, "../../x"),
        Err("leaves the build root")
    );
    assert_eq!(
        symlink_stays_inside(link, "/usr/bin/java"),
        Err("is absolute")
    );
    assert_eq!(
        symlink_stays_inside(Path::new("x"), ".."),
        Err("leaves the build root")
    );
}

use super::*;
use crate::fleet::{EntryGauge, ProcessGauge};

#[test]
fn process_ids_give_entry_and_generation() {
    assert_eq!(entry_and_generation("proc-0-1-3"), Some(("0", 3)));
    assert_eq!(entry_and_generation("proc-12-0-1"), Some(("12", 1)));
    for bad in [
        "proc-0-1",
        "proc-x-1-2",
        "proc-0-1-2-3",
        "gssess-1",
        "proc-0-1-y",
    ] {
        assert_eq!(entry_and_generation(bad), None, "{bad}");
    }
}

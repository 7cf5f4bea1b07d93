//! Saying an error to a person: its causes in one line, each once.

/// An error and its causes, each said once: the module errors already name their cause in
/// their message, so a cause whose text is already there is skipped.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

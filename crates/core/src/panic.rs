//! What a caught panic says, for logs and a worker's `last_error`.

use std::any::Any;

/// The message of a panic's payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match what {
        Some(m) => format!("panicked: {m}"),
        None => "panicked".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn says_what_the_panic_said() {
        let literal = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "panicked: boom");
        let formatted = std::panic::catch_unwind(|| panic!("{} {}", "a", 1)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "panicked: a 1");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "panicked");
    }
}

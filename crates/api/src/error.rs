//! The body of every refused request: `{"error": "…"}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_body_is_one_field() {
        crate::pin(
            &ErrorBody {
                error: "no node named \"x\"".into(),
            },
            r#"{"error":"no node named \"x\""}"#,
        );
    }
}

//! Opaque identifiers. Random, printable, prefixed by kind so a pasted id says what it is.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh id: the prefix and 16 random hex digits (64 bits).
            pub fn generate() -> Self {
                let n: u64 = rand::rng().random();
                Self(format!(concat!($prefix, "{:016x}"), n))
            }

            /// Wraps an id read from storage or the wire; ids are opaque, so any
            /// non-empty string of printable ASCII is accepted.
            pub fn from_string(s: impl Into<String>) -> Option<Self> {
                let s = s.into();
                let printable = s.bytes().all(|b| b.is_ascii_graphic());
                (!s.is_empty() && s.len() <= 64 && printable).then_some(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// Identifies a node for its whole life; its name may be reused after deletion, its id never.
    NodeId,
    "nd_"
);
random_id!(
    /// Identifies an invite in listings and for revocation (never the secret).
    InviteId,
    "inv_"
);
random_id!(
    /// Identifies a task in the journal.
    TaskId,
    "tsk_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = NodeId::generate();
        let b = NodeId::generate();
        assert!(a.as_str().starts_with("nd_"));
        assert_eq!(a.as_str().len(), 19);
        assert_ne!(a, b);
        assert!(InviteId::from_string("").is_none());
        assert!(InviteId::from_string("a b").is_none());
    }
}

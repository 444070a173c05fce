//! Docker-style generated names (`adjective_scientist`) and name validation.

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid",
    "nifty", "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous",
    "bold",
];

const SCIENTISTS: &[&str] = &[
    "lovelace",
    "turing",
    "hopper",
    "curie",
    "noether",
    "ritchie",
    "thompson",
    "torvalds",
    "shannon",
    "dijkstra",
    "knuth",
    "liskov",
    "hamilton",
    "babbage",
    "bell",
    "franklin",
    "galois",
    "kepler",
    "meitner",
    "ramanujan",
];

/// A readable name picked from the random bytes of a fresh container id.
pub fn generate(seed: &[u8]) -> String {
    let a = seed.first().copied().unwrap_or(0) as usize % ADJECTIVES.len();
    let s = seed.get(1).copied().unwrap_or(0) as usize % SCIENTISTS.len();
    format!("{}_{}", ADJECTIVES[a], SCIENTISTS[s])
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(is_valid("web"));
        assert!(is_valid("a1.b_c-d"));
        assert!(!is_valid(""));
        assert!(!is_valid("-web"));
        assert!(!is_valid("we b"));
        assert!(!is_valid("x/y"));
    }

    #[test]
    fn generated_names_are_valid() {
        for i in 0..=255u8 {
            assert!(is_valid(&generate(&[i, i.wrapping_mul(7)])));
        }
    }
}

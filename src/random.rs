//! Unguessable tokens from the operating system's generator, for names a client must not
//! be able to predict: assigned MQTT client ids, temporary queue names.
//!
//! A leaf module: both listeners use it, and neither may import the other.

/// `bytes` random bytes as lower-case hex (`2 × bytes` digits). Fails only when the
/// OS generator does; callers refuse what needed the token rather than fall back to
/// something predictable.
pub fn hex_token(bytes: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_hex_of_the_asked_length_and_differ() {
        let a = crate::random::hex_token(12).unwrap();
        assert_eq!(a.len(), 24);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, crate::random::hex_token(12).unwrap());
    }
}

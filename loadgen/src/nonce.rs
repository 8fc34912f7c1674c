//! The nonce every chat send carries, WebSocket or HTTP: `"<user>:<n>:<unix µs>"`. The
//! time is the intended send time (open model) or the actual one (closed), so a recipient
//! in any worker process on this machine measures send→delivery with the same clock, and
//! the checker knows who sent a message it received (user, send counter).

/// The nonce of user `user`'s `n`-th send, sent at `unix_us`.
pub fn nonce(user: u32, n: u64, unix_us: u64) -> String {
    format!("{user}:{n}:{unix_us}")
}

/// Parse a nonce made by [`nonce`]: (user, n, unix µs).
pub fn parse_nonce(s: &str) -> Option<(u32, u64, u64)> {
    let mut it = s.splitn(3, ':');
    let user = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    let t = it.next()?.parse().ok()?;
    Some((user, n, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_round_trip() {
        let n = nonce(17, 3, 1_700_000_000_123_456);
        assert_eq!(parse_nonce(&n), Some((17, 3, 1_700_000_000_123_456)));
        assert_eq!(parse_nonce("x:1:2"), None);
        assert_eq!(parse_nonce("1:2"), None);
    }
}

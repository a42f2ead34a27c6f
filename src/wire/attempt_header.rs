//! The `wharf-attempt` header on a received message: the attempts made
//! before this delivery (docs/wire-format.md, "wharf's headers on input").
//!
//! wharf's own copies carry it (retry copies on RabbitMQ, deferred and
//! given-back copies on both brokers), and so may a message any publisher
//! sent: wharf cannot tell the two apart, so the header is read the same
//! way whoever wrote it, and a value that is not a number of attempts is
//! malformed input, not a count.

/// The attempts `value` (the header, if present) says were made: 0 when
/// absent; the reason, naming the header, when it is not a whole number
/// from 0 to `u32::MAX`.
pub(crate) fn carried(value: Option<&str>) -> Result<u32, String> {
    let Some(raw) = value else {
        return Ok(0);
    };
    let digits = raw.trim();
    // `parse` also takes a leading `+`: a number all the same.
    match digits.parse::<u32>() {
        Ok(attempts) => Ok(attempts),
        Err(_) => Err(format!(
            "header wharf-attempt {raw:?} is not a whole number of attempts from 0 to {}",
            u32::MAX
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::carried;

    #[test]
    fn a_number_of_attempts_or_the_reason_it_is_not_one() {
        assert_eq!(carried(None), Ok(0));
        assert_eq!(carried(Some("0")), Ok(0));
        assert_eq!(carried(Some(" 3 ")), Ok(3));
        assert_eq!(carried(Some("4294967295")), Ok(u32::MAX));
        for bad in ["", "abc", "-1", "2.5", "4294967296", "9223372036854775807", "1e3"] {
            let why = carried(Some(bad)).unwrap_err();
            assert!(why.contains("wharf-attempt"), "{bad:?}: {why}");
            assert!(why.contains(&format!("{bad:?}")), "{bad:?}: {why}");
        }
    }
}

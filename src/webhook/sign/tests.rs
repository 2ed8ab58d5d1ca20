use super::*;
use std::collections::HashSet;

const TOLERANCE: Duration = Duration::from_secs(300);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn secret(s: &str) -> SigningSecret {
    SigningSecret::new(s).unwrap()
}

#[test]
fn published_vectors() {
    // (secret, id, timestamp, payload, signature), from the specification.
    let vectors: [(&str, &str, i64, &[u8], &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];
    for (key, id, timestamp, payload, expected) in vectors {
        assert_eq!(secret(key).sign(id, timestamp, payload), expected, "{id}");
    }
}

#[test]
fn published_vectors_verify() {
    let s = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_eq!(
        verify(
            &[s],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            br#"{"test": 2432232314}"#,
            at(1614265330),
            TOLERANCE,
        ),
        Ok(())
    );
}

#[test]
fn prefix_is_optional_and_padding_is_optional() {
    let a = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let b = secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_eq!(a.key, b.key);
    // 5 bytes encode as "aGVsbG8=" padded.
    assert_eq!(secret("whsec_aGVsbG8").key, b"hello");
    assert_eq!(secret("whsec_aGVsbG8=").key, b"hello");
    assert_eq!(secret("whsec_aGVsbG8=").to_whsec_string(), "whsec_aGVsbG8=");
}

#[test]
fn bad_secrets_are_rejected_without_echoing_them() {
    assert_eq!(
        SigningSecret::new("whsec_not*base64").unwrap_err(),
        SecretError::InvalidBase64
    );
    assert_eq!(
        "whsec_ aGVsbG8".parse::<SigningSecret>().unwrap_err(),
        SecretError::InvalidBase64
    );
    assert_eq!(SigningSecret::new("").unwrap_err(), SecretError::Empty);
    assert_eq!(
        SigningSecret::new("whsec_").unwrap_err(),
        SecretError::Empty
    );
    let msg = SigningSecret::new("whsec_not*base64")
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("base64*"), "{msg}");
    assert!(!msg.contains("not*"), "{msg}");
}

#[test]
fn debug_does_not_leak_the_key() {
    let text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let s = secret(text);
    let debug = format!("{s:?} {s:#?}");
    assert!(!debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert!(!debug.contains(&format!("{:?}", s.key)));
    assert!(!debug.contains(&format!("{:x?}", s.key)));
    assert_eq!(format!("{s:?}"), "SigningSecret(..)");
}

#[test]
fn generated_secret_round_trips() {
    let keys = [SigningSecret::generate()];
    let s = &keys[0];
    assert_eq!(s.key.len(), GENERATED_KEY_LEN);
    let again = secret(&s.to_whsec_string());
    assert_eq!(again.key, s.key);
}

#[test]
fn rotation_header_verifies_with_either_secret() {
    let old = SigningSecret::generate();
    let new = SigningSecret::generate();
    let body = br#"{"type":"invoice.paid"}"#;
    let header = signature_header(&[old.clone(), new.clone()], "msg_x", 1_700_000_000, body);
    let entries: Vec<&str> = header.split(' ').collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], old.sign("msg_x", 1_700_000_000, body));
    assert_eq!(entries[1], new.sign("msg_x", 1_700_000_000, body));
    for alone in [old, new] {
        assert_eq!(
            verify(
                &[alone],
                "msg_x",
                "1700000000",
                &header,
                body,
                at(1_700_000_000),
                TOLERANCE
            ),
            Ok(())
        );
    }
    let stranger = SigningSecret::generate();
    assert_eq!(
        verify(
            &[stranger],
            "msg_x",
            "1700000000",
            &header,
            body,
            at(1_700_000_000),
            TOLERANCE
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn tampering_fails() {
    let keys = [SigningSecret::generate()];
    let body = br#"{"amount":100}"#;
    let header = signature_header(&keys, "msg_x", 1_700_000_000, body);
    let now = at(1_700_000_000);
    let check =
        |id: &str, ts: &str, body: &[u8]| verify(&keys, id, ts, &header, body, now, TOLERANCE);
    assert_eq!(check("msg_x", "1700000000", body), Ok(()));
    assert_eq!(
        check("msg_x", "1700000000", br#"{"amount":900}"#),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        check("msg_y", "1700000000", body),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        check("msg_x", "1700000001", body),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn timestamp_tolerance_is_inclusive_both_ways() {
    let keys = [SigningSecret::generate()];
    let header = signature_header(&keys, "m", 1_000_000, b"");
    let check = |now| verify(&keys, "m", "1000000", &header, b"", now, TOLERANCE);
    assert_eq!(check(at(1_000_300)), Ok(()));
    assert_eq!(check(at(999_700)), Ok(()));
    assert_eq!(
        check(at(1_000_301)),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    assert_eq!(
        check(at(999_699)),
        Err(VerifyError::TimestampOutOfTolerance)
    );
}

#[test]
fn absurd_timestamps_do_not_panic() {
    let keys = [SigningSecret::generate()];
    for ts in [i64::MIN, i64::MAX, -1] {
        let ts_text = ts.to_string();
        let header = signature_header(&keys, "m", ts, b"");
        assert_eq!(
            verify(
                &keys,
                "m",
                &ts_text,
                &header,
                b"",
                at(1_700_000_000),
                TOLERANCE
            ),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }
}

#[test]
fn malformed_headers() {
    let keys = [SigningSecret::generate()];
    let s = &keys[0];
    let now = at(1_700_000_000);
    let ok_sig = s.sign("m", 1_700_000_000, b"");
    assert_eq!(
        verify(&keys, "", "1700000000", &ok_sig, b"", now, TOLERANCE),
        Err(VerifyError::MissingHeader(HEADER_WEBHOOK_ID))
    );
    assert_eq!(
        verify(&keys, "m", "", &ok_sig, b"", now, TOLERANCE),
        Err(VerifyError::MissingHeader(HEADER_WEBHOOK_TIMESTAMP))
    );
    assert_eq!(
        verify(&keys, "m", "1700000000", "", b"", now, TOLERANCE),
        Err(VerifyError::MissingHeader(HEADER_WEBHOOK_SIGNATURE))
    );
    for ts in ["1700000000.5", "abc", " 1700000000", "0x10"] {
        assert_eq!(
            verify(&keys, "m", ts, &ok_sig, b"", now, TOLERANCE),
            Err(VerifyError::InvalidTimestamp),
            "{ts}"
        );
    }
    // Junk entries around a good one are skipped, not fatal.
    let noisy = format!("garbage v2,AAAA v1,!!!  {ok_sig} v1a,xyz");
    assert_eq!(
        verify(&keys, "m", "1700000000", &noisy, b"", now, TOLERANCE),
        Ok(())
    );
    // The right signature under the wrong version label does not count.
    let relabelled = ok_sig.replacen("v1,", "v1a,", 1);
    assert_eq!(
        verify(&keys, "m", "1700000000", &relabelled, b"", now, TOLERANCE),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        verify(&[], "m", "1700000000", &ok_sig, b"", now, TOLERANCE),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn empty_secret_list_gives_empty_header() {
    assert_eq!(signature_header(&[], "m", 1, b""), "");
}

#[test]
fn message_ids_are_unique_and_dot_free() {
    let ids: HashSet<String> = (0..10_000).map(|_| new_message_id()).collect();
    assert_eq!(ids.len(), 10_000);
    for id in &ids {
        assert!(id.starts_with("msg_"), "{id}");
        assert!(!id.contains('.'), "{id}");
        assert!(id.len() >= 4 + 24, "{id}");
    }
}

#[test]
fn error_messages_are_lowercase_without_period() {
    let messages = [
        SecretError::Empty.to_string(),
        SecretError::InvalidBase64.to_string(),
        VerifyError::MissingHeader(HEADER_WEBHOOK_ID).to_string(),
        VerifyError::InvalidTimestamp.to_string(),
        VerifyError::TimestampOutOfTolerance.to_string(),
        VerifyError::NoMatchingSignature.to_string(),
    ];
    for m in messages {
        assert!(!m.ends_with('.'), "{m}");
        assert_eq!(m, m.to_lowercase(), "{m}");
    }
}

#[test]
fn types_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SigningSecret>();
    assert_send_sync::<SecretError>();
    assert_send_sync::<VerifyError>();
}

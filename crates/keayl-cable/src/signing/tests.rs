//! Test vectors: the worked example of the specification (§7.2) and vectors computed
//! independently with Python's `hmac`, `hashlib.pbkdf2_hmac` and `json.dumps(ensure_ascii=False)`.

use proptest::prelude::*;

use super::*;

const KEY: &str = "s3Krit";
const CHAT_2023: &str =
    "ImNoYXQvMjAyMyI=--2b2e054b6413bf3bc7e8bbad2f68962aa2ba19821800ccbd8de6fd7314e8320c";

fn verifier() -> StreamVerifier {
    StreamVerifier::new(KEY)
}

/// Signs an arbitrary payload text (not necessarily Base64 of JSON).
fn sign_raw(payload: &str) -> String {
    let digest = verifier().hex_digest(payload.as_bytes());
    format!("{payload}--{}", std::str::from_utf8(&digest).unwrap())
}

#[test]
fn worked_example_verifies() {
    assert_eq!(verifier().verify(CHAT_2023), Ok("chat/2023".to_owned()));
}

#[test]
fn worked_example_generates_byte_for_byte() {
    assert_eq!(verifier().generate("chat/2023"), CHAT_2023);
}

#[test]
fn python_vectors() {
    for (name, signed) in [
        (
            "héllo <b>&</b> \u{2028} 😀",
            "ImjDqWxsbyA8Yj4mPC9iPiDigKgg8J+YgCI=--307b79a7449b7ac466aa9857e527ee0fff072f6af69d079b70be61f3c33851cb",
        ),
        (
            "",
            "IiI=--2a111c4d4ce3ca2bb84d8d2af6d29fa8ff12419ac99d7c5b7cb8099e54504dd4",
        ),
        (
            "a\"b\\c\n\u{1}",
            "ImFcImJcXGNcblx1MDAwMSI=--c0c2b8024d4d77ba6cb8b2d0bf2cb801dff585a6209f3a147acae1ad76acdc96",
        ),
    ] {
        assert_eq!(verifier().generate(name), signed, "{name:?}");
        assert_eq!(verifier().verify(signed), Ok(name.to_owned()), "{name:?}");
    }
}

#[test]
fn key_generator_sha256() {
    let key = generate_key(
        "secret_key_base_for_tests",
        TURBO_STREAM_SALT,
        KeyDigest::Sha256,
    );
    assert_eq!(
        key.to_vec(),
        hex::decode("e31b49efed1f3e2a2041c91683bb6fb4aa97bb5f990f2cb4c4e0b4fc450bcd78b6ee6d3bf0afc3498fe4040860a7683026b1009dfcd225436d1b6ae6bca5cb65").unwrap()
    );
    let verifier = StreamVerifier::from_secret_key_base(
        "secret_key_base_for_tests",
        TURBO_STREAM_SALT,
        KeyDigest::Sha256,
    );
    let signed = "ImdpZDovL2FwcC9Sb29tLzE6bWVzc2FnZXMi--1e53c27ccb55fd57147cd30d36faf31d93568be802951329d327ef3e0c8f8468";
    assert_eq!(verifier.generate("gid://app/Room/1:messages"), signed);
    assert_eq!(
        verifier.verify(signed),
        Ok("gid://app/Room/1:messages".to_owned())
    );
    // Same key, given raw.
    assert_eq!(
        StreamVerifier::new(key).verify(signed),
        Ok("gid://app/Room/1:messages".to_owned())
    );
}

#[test]
fn key_generator_sha1() {
    let key = generate_key(
        "secret_key_base_for_tests",
        TURBO_STREAM_SALT,
        KeyDigest::Sha1,
    );
    assert_eq!(
        key.to_vec(),
        hex::decode("02d442d5b2e019b5cfbcf602248ae8016226f6bac77f17ec4154c87b0d6bc0e721b638ea8c1f4888dfe61b1a8f5aa0fb10796ace8f3cf7806417037b276b1742").unwrap()
    );
    let verifier = StreamVerifier::from_secret_key_base(
        "secret_key_base_for_tests",
        TURBO_STREAM_SALT,
        KeyDigest::Sha1,
    );
    let signed = "ImdpZDovL2FwcC9Sb29tLzE6bWVzc2FnZXMi--891ec9399cfaf12c6557f3beae2bb5af234f998157b0833768bf831487d69949";
    assert_eq!(
        verifier.verify(signed),
        Ok("gid://app/Room/1:messages".to_owned())
    );
    // A SHA256-derived verifier must not accept it.
    let sha256 = StreamVerifier::from_secret_key_base(
        "secret_key_base_for_tests",
        TURBO_STREAM_SALT,
        KeyDigest::Sha256,
    );
    assert_eq!(sha256.verify(signed), Err(VerifyError::InvalidSignature));
}

#[test]
fn tampered_signature_is_rejected() {
    let mut tampered = CHAT_2023.to_owned();
    tampered.pop();
    tampered.push('d');
    assert_eq!(
        verifier().verify(&tampered),
        Err(VerifyError::InvalidSignature)
    );
    // Rails compares the hex text: uppercase hex is a mismatch too.
    let (payload, digest) = CHAT_2023.split_once("--").unwrap();
    let upper = format!("{payload}--{}", digest.to_uppercase());
    assert_eq!(
        verifier().verify(&upper),
        Err(VerifyError::InvalidSignature)
    );
    // Another key.
    assert_eq!(
        StreamVerifier::new("other").verify(CHAT_2023),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn tampered_payload_is_rejected() {
    // "chat/2024" under the signature of "chat/2023".
    let (_, digest) = CHAT_2023.split_once("--").unwrap();
    let forged = format!("ImNoYXQvMjAyNCI=--{digest}");
    assert_eq!(
        verifier().verify(&forged),
        Err(VerifyError::InvalidSignature)
    );
    // An unpadded spelling of the same payload is a different signed text.
    let unpadded = format!("ImNoYXQvMjAyMyI--{digest}");
    assert_eq!(
        verifier().verify(&unpadded),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn missing_separator_is_malformed() {
    let without = CHAT_2023.replace("--", "");
    assert_eq!(verifier().verify(&without), Err(VerifyError::Malformed));
    let single_dash = CHAT_2023.replacen("--", "-", 1);
    assert_eq!(verifier().verify(&single_dash), Err(VerifyError::Malformed));
    // The separator position is computed from the digest length, not searched.
    let short_digest = &CHAT_2023[..CHAT_2023.len() - 1];
    assert_eq!(verifier().verify(short_digest), Err(VerifyError::Malformed));
    let long_digest = format!("{CHAT_2023}0");
    assert_eq!(verifier().verify(&long_digest), Err(VerifyError::Malformed));
    // Empty payload (`--` + digest) is malformed, as Rails requires `data.present?`.
    for input in ["", "--", "x--", &CHAT_2023[16..]] {
        assert_eq!(
            verifier().verify(input),
            Err(VerifyError::Malformed),
            "{input:?}"
        );
    }
}

#[test]
fn non_ascii_near_the_separator_does_not_panic() {
    let tail = "é".repeat(40);
    assert!(verifier().verify(&tail).is_err());
    let signed = format!("é{}", &CHAT_2023[1..]);
    assert!(verifier().verify(&signed).is_err());
    let signed = format!("{}--{}", "é", "€".repeat(22));
    assert!(verifier().verify(&signed).is_err());
}

#[test]
fn non_base64_payload_is_rejected() {
    assert_eq!(
        sign_raw("not base64!"),
        "not base64!--dd3774ac5cf1123e4468cccae1753838469247a3b754671571d84ae5006577e0"
    );
    assert_eq!(
        verifier().verify(&sign_raw("not base64!")),
        Err(VerifyError::InvalidBase64)
    );
    // Strict decoding: padding required, no URL-safe alphabet, no whitespace.
    for payload in ["ImNoYXQvMjAyMyI", "ImNo_XQvMjAyMyI=", "ImNoYXQv\nMjAyMyI="] {
        assert_eq!(
            verifier().verify(&sign_raw(payload)),
            Err(VerifyError::InvalidBase64),
            "{payload:?}"
        );
    }
}

#[test]
fn base64_of_non_json_is_rejected() {
    let signed = sign_raw("bm90IGpzb24="); // "not json"
    assert_eq!(
        signed,
        "bm90IGpzb24=--8e84d0d5ae8627ed2a71102d2eb0777c1958b0bab026b5cf488c2c6cda476382"
    );
    let e = verifier().verify(&signed).unwrap_err();
    assert_eq!(e, VerifyError::InvalidJson);
    assert_eq!(e.kind(), "invalid_json");
}

#[test]
fn json_that_is_not_a_string_is_rejected() {
    assert_eq!(
        verifier().verify("NDI=--2d53b38533171491dd1a58c191944702e1782607fc51394999267fb18def0fc6"),
        Err(VerifyError::NotAString { found: "number" })
    );
    assert_eq!(
        verifier().verify(
            "WyJjaGF0Il0=--d3682a5583b248ab8b284c72e7308892901522b8782c8a5217e604d94d68bb26"
        ),
        Err(VerifyError::NotAString { found: "array" })
    );
    // A metadata envelope (purpose/expiry) is not a plain stream name.
    assert_eq!(
        verifier().verify("eyJfcmFpbHMiOnsibWVzc2FnZSI6IkltTm9ZWFFpIn19--52a77687c480200fcbeff7657965725216ff1ff0069af692d3a37d01986c7b05"),
        Err(VerifyError::NotAString { found: "object" })
    );
}

#[test]
fn error_kinds() {
    let kinds = [
        VerifyError::Malformed.kind(),
        VerifyError::InvalidSignature.kind(),
        VerifyError::InvalidBase64.kind(),
        VerifyError::InvalidJson.kind(),
        VerifyError::NotAString { found: "null" }.kind(),
    ];
    let unique: std::collections::HashSet<_> = kinds.iter().collect();
    assert_eq!(unique.len(), kinds.len());
}

#[test]
fn debug_does_not_leak_the_key() {
    let debug = format!("{:?}", StreamVerifier::new("super-secret"));
    assert!(!debug.contains("super-secret"));
    assert!(debug.starts_with("StreamVerifier"));
}

proptest! {
    #[test]
    fn generate_then_verify_round_trips(name in any::<String>(), key in any::<Vec<u8>>()) {
        let verifier = StreamVerifier::new(key);
        let signed = verifier.generate(&name);
        prop_assert_eq!(verifier.verify(&signed), Ok(name));
    }

    #[test]
    fn verify_never_panics(input in any::<String>()) {
        let _ = verifier().verify(&input);
    }

    #[test]
    fn verify_never_panics_near_valid(cut in 0usize..90, insert in any::<char>()) {
        let mut input: Vec<char> = CHAT_2023.chars().collect();
        let cut = cut.min(input.len());
        input.insert(cut, insert);
        let input: String = input.into_iter().collect();
        prop_assert!(verifier().verify(&input).is_err() || input == CHAT_2023);
    }
}

//! Published test vectors: Ed25519 (RFC 8032 section 7.1, tests 1-3), the
//! Ed25519 JWS of RFC 8037 appendix A.4, and JSON canonicalisation (RFC 8785
//! sections 3.2.2, 3.2.3 and appendix B).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use mrv_shared::report::canonical::canonicalize;
use mrv_shared::report::jwk::Jwk;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// (secret key, public key, message, signature), RFC 8032 section 7.1.
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn rfc8032_test_vectors_1_to_3_sign_and_verify() {
    for (sk, pk, msg, sig) in RFC8032 {
        let key = SigningKey::from_bytes(&unhex(sk).try_into().expect("32 bytes"));
        assert_eq!(key.verifying_key().as_bytes().to_vec(), unhex(pk));
        let s = key.sign(&unhex(msg));
        assert_eq!(s.to_bytes().to_vec(), unhex(sig));
        let vk = VerifyingKey::from_bytes(&unhex(pk).try_into().expect("32 bytes")).expect("point");
        vk.verify(&unhex(msg), &s).expect("verifies");
        let mut bad = unhex(msg);
        bad.push(0);
        assert!(vk.verify(&bad, &s).is_err());
    }
}

#[test]
fn rfc8037_a4_ed25519_jws_verifies_and_is_reproduced() {
    // RFC 8037 appendix A.1 key, A.4 signature of "Example of Ed25519 signing".
    let jwk: Jwk = serde_json::from_str(
        r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    )
    .expect("jwk");
    let key = jwk.signing_key().expect("d matches x");
    let signing_input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let sig =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let produced = key.sign(signing_input.as_bytes());
    assert_eq!(URL_SAFE_NO_PAD.encode(produced.to_bytes()), sig);
    let bytes: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .expect("b64")
        .try_into()
        .expect("64");
    jwk.verifying_key()
        .expect("x")
        .verify(signing_input.as_bytes(), &Signature::from_bytes(&bytes))
        .expect("verifies");
}

fn jcs(input: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(input).expect("json");
    String::from_utf8(canonicalize(&v).expect("canonical")).expect("utf8")
}

#[test]
fn rfc8785_section_3_2_2_sample() {
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    assert_eq!(
        jcs(input),
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
}

#[test]
fn rfc8785_section_3_2_3_sorting_by_utf16_code_units() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    let out = jcs(input);
    let order = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|s| out.find(s).expect("present"))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.starts_with("{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\""));
}

#[test]
fn rfc8785_appendix_b_number_serialisation() {
    let cases = [
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ];
    for (bits, want) in cases {
        let f = f64::from_bits(u64::from_str_radix(bits, 16).expect("hex"));
        let v = serde_json::Value::from(f);
        let got = String::from_utf8(canonicalize(&v).expect("finite")).expect("utf8");
        assert_eq!(got, want, "{bits}");
    }
}

#[test]
fn integers_in_reports_are_written_exactly() {
    assert_eq!(
        jcs("[0,-1,9007199254740993,18446744073709551615,-9223372036854775808]"),
        "[0,-1,9007199254740993,18446744073709551615,-9223372036854775808]"
    );
}

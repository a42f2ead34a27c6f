//! The standard errors a handler meets, returned as they are (retryable),
//! and wharf's own errors (each deciding its permanence).

use wharf::{App, Broker, BrokerError, Codec, CodecError, IntoFailure, RequestError};

async fn read(path: String) -> Result<String, std::io::Error> {
    std::fs::read_to_string(path)
}

async fn number(text: String) -> Result<u64, std::num::ParseIntError> {
    text.parse()
}

async fn ratio(text: String) -> Result<f64, std::num::ParseFloatError> {
    text.parse()
}

async fn utf8(bytes: Vec<u8>) -> Result<String, std::string::FromUtf8Error> {
    String::from_utf8(bytes)
}

async fn json(text: String) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(&text)
}

async fn msgpack(bytes: Vec<u8>) -> Result<u32, rmp_serde::decode::Error> {
    rmp_serde::from_slice(&bytes)
}

async fn broker(_: u32) -> Result<(), BrokerError> {
    Ok(())
}

async fn codec(bytes: Vec<u8>) -> Result<u32, CodecError> {
    Codec::Json.decode(&bytes)
}

async fn request(_: u32) -> Result<u32, RequestError> {
    Err(RequestError::Encode(CodecError::Encode("no".into())))
}

fn main() {
    let _app = App::new(Broker::memory())
        .route("read", read)
        .route("number", number)
        .route("ratio", ratio)
        .route("utf8", utf8)
        .route("json", json)
        .route("msgpack", msgpack)
        .route("broker", broker)
        .route("codec", codec)
        .route("request", request);

    let io = std::io::Error::other("disk full").into_failure();
    assert!(!io.permanent);
    assert_eq!(io.kind, "handler");
    let decode = Codec::Json.decode::<u32>(b"{").unwrap_err().into_failure();
    assert!(decode.permanent, "the same payload never decodes");
    assert_eq!(decode.kind, "decode");
}

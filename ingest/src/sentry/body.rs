//! Request bodies of the Sentry endpoints: `Content-Encoding` gzip, deflate or br, decoded with a
//! limit on the decoded size, so that a small compressed body that inflates to gigabytes (a zip
//! bomb) costs at most the limit and answers 413.

use crate::error::ApiError;
use bytes::Bytes;
use serde_json::json;
use std::io::Read;

/// The encodings we decode, as named by `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Encoding {
    /// The name used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
        }
    }

    /// Reads a `Content-Encoding` header (absent means identity). A chain of encodings is refused:
    /// no SDK sends one.
    pub fn from_header(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Encoding::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            "br" => Ok(Encoding::Brotli),
            _ => Err(ApiError::validation(
                "unsupported Content-Encoding",
                json!({"content-encoding": "must be one of gzip, deflate, br, identity"}),
            )),
        }
    }
}

/// Decodes `body`; more than `limit` decoded bytes answers 413 without decoding further. CPU-bound,
/// so callers run it off the async threads ([`decode_blocking`]).
pub fn decode(encoding: Encoding, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let bad = |what: &str| {
        ApiError::validation(
            format!("the body is not valid {what}"),
            json!({"body": format!("could not be decoded as {what}")}),
        )
    };
    let data = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            return Ok(body);
        }
        Encoding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(&body[..]), limit)
            .map_err(|e| e.unwrap_or_else(|| bad("gzip")))?,
        Encoding::Deflate => {
            // HTTP's `deflate` is zlib-wrapped, but some clients send raw deflate: try both.
            match read_limited(flate2::read::ZlibDecoder::new(&body[..]), limit) {
                Ok(data) => data,
                Err(Some(too_large)) => return Err(too_large),
                Err(None) => read_limited(flate2::read::DeflateDecoder::new(&body[..]), limit)
                    .map_err(|e| e.unwrap_or_else(|| bad("deflate")))?,
            }
        }
        Encoding::Brotli => read_limited(
            brotli_decompressor::Decompressor::new(&body[..], 4096),
            limit,
        )
        .map_err(|e| e.unwrap_or_else(|| bad("brotli")))?,
    };
    Ok(Bytes::from(data))
}

/// [`decode`] on the blocking pool.
pub async fn decode_blocking(
    encoding: Encoding,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if encoding == Encoding::Identity {
        return decode(encoding, body, limit);
    }
    tokio::task::spawn_blocking(move || decode(encoding, body, limit))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
}

/// Reads at most `limit` bytes; `Err(Some(413))` past it, `Err(None)` when the stream is corrupt.
fn read_limited(reader: impl Read, limit: usize) -> Result<Vec<u8>, Option<ApiError>> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| None)?;
    if out.len() > limit {
        return Err(Some(ApiError::PayloadTooLarge { limit }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn gzip_and_both_kinds_of_deflate_decode() {
        let data = b"{\"message\":\"hello\"}".repeat(10);
        assert_eq!(
            decode(Encoding::Gzip, gzip(&data), 1000).unwrap(),
            &data[..]
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let z = Bytes::from(z.finish().unwrap());
        assert_eq!(decode(Encoding::Deflate, z, 1000).unwrap(), &data[..]);
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(&data).unwrap();
        let d = Bytes::from(d.finish().unwrap());
        assert_eq!(decode(Encoding::Deflate, d, 1000).unwrap(), &data[..]);
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let err = decode(Encoding::Gzip, bomb, 1024 * 1024).unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge { .. }));
    }

    #[test]
    fn a_corrupt_body_is_a_client_error() {
        let err = decode(Encoding::Gzip, Bytes::from_static(b"not gzip"), 1000).unwrap_err();
        assert!(matches!(err, ApiError::Validation { .. }));
        assert!(Encoding::from_header(Some("compress")).is_err());
        assert_eq!(Encoding::from_header(None).unwrap(), Encoding::Identity);
        assert_eq!(Encoding::from_header(Some("GZIP")).unwrap(), Encoding::Gzip);
    }
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bytes under every `Content-Encoding`: never a panic, never more than the limit
    //! decoded, and every failure a client error (400 or 413), never a 500.
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    const LIMIT: usize = 4096;

    fn encoding() -> impl Strategy<Value = Encoding> {
        prop_oneof![
            Just(Encoding::Identity),
            Just(Encoding::Gzip),
            Just(Encoding::Deflate),
            Just(Encoding::Brotli),
        ]
    }

    fn check(result: Result<Bytes, ApiError>) -> Result<(), TestCaseError> {
        match result {
            Ok(data) => prop_assert!(data.len() <= LIMIT),
            Err(e) => prop_assert!(matches!(e.status_code().as_u16(), 400 | 413), "{e:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_decode_or_are_refused(
            enc in encoding(),
            body in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            check(decode(enc, Bytes::from(body), LIMIT))?;
        }

        /// A valid gzip stream with corrupted bytes: the decoder meets plausible headers and
        /// broken blocks rather than junk it refuses at the first byte.
        #[test]
        fn corrupted_gzip_is_refused_or_bounded(
            data in prop::collection::vec(any::<u8>(), 0..2048),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        ) {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            let mut gz = e.finish().unwrap();
            for (at, byte) in flips {
                let i = at.index(gz.len());
                gz[i] ^= byte;
            }
            check(decode(Encoding::Gzip, Bytes::from(gz), LIMIT))?;
        }

        #[test]
        fn any_content_encoding_header_is_known_or_a_400(value in "\\PC{0,20}") {
            if let Err(e) = Encoding::from_header(Some(&value)) {
                prop_assert_eq!(e.status_code().as_u16(), 400);
            }
        }
    }
}

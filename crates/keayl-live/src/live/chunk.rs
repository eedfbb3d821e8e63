use bytes::Bytes;

/// One piece of a live body: text (sent as UTF-8) or bytes (sent unchanged).
///
/// Anything string-like or byte-like converts into a `Chunk`, so
/// `stream.write("text")`, `stream.write(format!(…))`,
/// `stream.write(vec![0xff])` and `stream.write(Bytes::from_static(b"…"))`
/// all work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Text, encoded as UTF-8 on the wire.
    Text(String),
    /// Bytes, written through unchanged.
    Bytes(Bytes),
}

impl Chunk {
    /// The bytes this chunk puts on the wire.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Chunk::Text(s) => Bytes::from(s),
            Chunk::Bytes(b) => b,
        }
    }
}

impl From<&str> for Chunk {
    fn from(s: &str) -> Self {
        Chunk::Text(s.to_owned())
    }
}
impl From<String> for Chunk {
    fn from(s: String) -> Self {
        Chunk::Text(s)
    }
}
impl From<&String> for Chunk {
    fn from(s: &String) -> Self {
        Chunk::Text(s.clone())
    }
}
impl From<Bytes> for Chunk {
    fn from(b: Bytes) -> Self {
        Chunk::Bytes(b)
    }
}
impl From<Vec<u8>> for Chunk {
    fn from(b: Vec<u8>) -> Self {
        Chunk::Bytes(Bytes::from(b))
    }
}
impl From<&[u8]> for Chunk {
    fn from(b: &[u8]) -> Self {
        Chunk::Bytes(Bytes::copy_from_slice(b))
    }
}
impl<const N: usize> From<&[u8; N]> for Chunk {
    fn from(b: &[u8; N]) -> Self {
        Chunk::Bytes(Bytes::copy_from_slice(b))
    }
}

//! A [`HashAlgorithm`] in serde forms by its name (`"blake3"`, `"md5"`),
//! as the command line and the digest header name it.

use archive_format::HashAlgorithm;
use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(hash: &HashAlgorithm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(hash.name())
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashAlgorithm, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

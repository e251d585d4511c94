//! How a compressed config travels in ConfigMaps: part of the contract between the controller,
//! which writes them, and the proxy, which reads them through the API.
//!
//! A config that fits sits whole in the Gateway's ConfigMap under [`CONFIG_KEY`]. A larger one
//! (a ConfigMap holds at most 1 MiB) is cut into parts of at most [`MAX_PART_BYTES`], each in a
//! ConfigMap of its own named by [`part_name`] under [`PART_KEY`]; the main ConfigMap then
//! carries only [`PARTS_ANNOTATION`]. Every part repeats the config's hash, so a reader never
//! joins parts of two different configs: the controller writes the parts first and the main
//! ConfigMap last, and a reader that sees the main one finds parts with its hash.

/// Key of the whole compressed config in the main ConfigMap's `binaryData`.
pub const CONFIG_KEY: &str = "config.toml.gz";
/// Key of one part of a compressed config in a part ConfigMap's `binaryData`.
pub const PART_KEY: &str = "config.toml.gz.part";
/// Annotation (main ConfigMap and every part): SHA-256 of the config's TOML, hex.
pub const HASH_ANNOTATION: &str = "citoroute.io/config-hash";
/// Annotation of the main ConfigMap when the config is split: how many parts.
pub const PARTS_ANNOTATION: &str = "citoroute.io/config-parts";
/// Annotation of a part: its index, from 0.
pub const PART_INDEX_ANNOTATION: &str = "citoroute.io/config-part";
/// Largest part: well under the 1 MiB ConfigMap limit, with room for metadata.
pub const MAX_PART_BYTES: usize = 768 * 1024;
/// A config is never split into more parts than this (`MAX_PARTS` × `MAX_PART_BYTES` is far
/// beyond any config the proxy accepts after unpacking).
pub const MAX_PARTS: usize = 64;

/// The name of part `index` of the config in ConfigMap `base`.
pub fn part_name(base: &str, index: usize) -> String {
    format!("{base}-part-{index}")
}

/// Cuts compressed config bytes into parts of at most `max` bytes; one part when they fit.
pub fn split(bytes: &[u8], max: usize) -> Vec<&[u8]> {
    if bytes.len() <= max || max == 0 {
        return vec![bytes];
    }
    bytes.chunks(max).collect()
}

/// One part as read from its ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's [`HASH_ANNOTATION`].
    pub hash: String,
    /// The part's [`PART_INDEX_ANNOTATION`].
    pub index: Option<usize>,
    /// The bytes under [`PART_KEY`].
    pub bytes: Vec<u8>,
}

/// Why parts did not join into the config the main ConfigMap announces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the main ConfigMap announces {0} parts (1 to {MAX_PARTS} expected)")]
    BadCount(String),
    #[error("part {0} is missing")]
    Missing(usize),
    #[error("part {index} belongs to config {found}, not {want} (a newer config is on its way)")]
    OtherConfig {
        index: usize,
        found: String,
        want: String,
    },
    #[error("part {index} says it is part {found:?}")]
    WrongIndex { index: usize, found: Option<usize> },
}

/// The number of parts a main ConfigMap's [`PARTS_ANNOTATION`] announces (`None`: whole).
pub fn parts_count(annotation: Option<&str>) -> Result<Option<usize>, JoinError> {
    match annotation {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PARTS).contains(&n) => Ok(Some(n)),
            _ => Err(JoinError::BadCount(v.to_string())),
        },
    }
}

/// Joins the parts of the config with hash `want`, in order; `parts[i]` is what was read as
/// part `i` (`None`: no such ConfigMap or no bytes).
pub fn join(want: &str, parts: &[Option<Part>]) -> Result<Vec<u8>, JoinError> {
    let mut out = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let part = part.as_ref().ok_or(JoinError::Missing(index))?;
        if part.hash != want {
            return Err(JoinError::OtherConfig {
                index,
                found: part.hash.clone(),
                want: want.to_string(),
            });
        }
        if part.index != Some(index) {
            return Err(JoinError::WrongIndex {
                index,
                found: part.index,
            });
        }
        out.extend_from_slice(&part.bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_of(bytes: &[u8], max: usize, hash: &str) -> Vec<Option<Part>> {
        split(bytes, max)
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                Some(Part {
                    hash: hash.to_string(),
                    index: Some(i),
                    bytes: b.to_vec(),
                })
            })
            .collect()
    }

    #[test]
    fn a_config_that_fits_stays_whole() {
        assert_eq!(split(b"abc", 3), vec![b"abc".as_slice()]);
        assert_eq!(split(b"", 3).len(), 1);
    }

    #[test]
    fn split_then_join_gives_the_bytes_back() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for max in [1, 999, 1000, 4096, 9_999] {
            let parts = parts_of(&bytes, max, "h");
            assert!(parts.iter().flatten().all(|p| p.bytes.len() <= max));
            assert_eq!(parts.len(), bytes.len().div_ceil(max));
            assert_eq!(join("h", &parts), Ok(bytes.clone()), "max {max}");
        }
    }

    #[test]
    fn parts_of_another_config_or_missing_parts_do_not_join() {
        let bytes = vec![1u8; 100];
        let mut parts = parts_of(&bytes, 40, "new");
        if let Some(p) = parts[1].as_mut() {
            p.hash = "old".to_string();
        }
        assert!(matches!(
            join("new", &parts),
            Err(JoinError::OtherConfig { index: 1, .. })
        ));
        let mut parts = parts_of(&bytes, 40, "new");
        parts[2] = None;
        assert_eq!(join("new", &parts), Err(JoinError::Missing(2)));
        let mut parts = parts_of(&bytes, 40, "new");
        parts.swap(0, 1);
        assert!(matches!(
            join("new", &parts),
            Err(JoinError::WrongIndex { index: 0, .. })
        ));
    }

    #[test]
    fn the_parts_annotation_is_checked() {
        assert_eq!(parts_count(None), Ok(None));
        assert_eq!(parts_count(Some("3")), Ok(Some(3)));
        for bad in ["0", "-1", "x", "65", ""] {
            assert!(parts_count(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! Committed offsets of consumer groups, kept in one small JSON file that is
//! replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory), so a commit survives `kill -9` once it returns.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::lock;
use super::segment::sync_dir;
use crate::LogError;

const FILE_NAME: &str = "offsets.json";
const TMP_NAME: &str = "offsets.json.tmp";
const VERSION: u32 = 1;
/// Longest group name, in bytes.
pub(crate) const MAX_GROUP_NAME: usize = 255;
/// Most groups one log tracks.
pub(crate) const MAX_GROUPS: usize = 1024;

type Groups = BTreeMap<String, BTreeMap<u32, u64>>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsFile {
    version: u32,
    groups: Groups,
}

/// Committed offsets of every group, in memory and on disk.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    /// Held across the file replacement so commits are serialized.
    groups: Mutex<Groups>,
}

impl OffsetStore {
    /// Loads the offsets file of the topic directory `dir`, if any.
    pub(crate) fn load(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(FILE_NAME);
        let groups = match fs::read(&path) {
            Ok(bytes) => {
                let file: OffsetsFile = serde_json::from_slice(&bytes)
                    .map_err(|e| LogError::Corrupt(format!("{}: {e}", path.display())))?;
                if file.version != VERSION {
                    return Err(LogError::Corrupt(format!(
                        "{}: unsupported version {}",
                        path.display(),
                        file.version
                    )));
                }
                file.groups
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Groups::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            dir: dir.to_owned(),
            groups: Mutex::new(groups),
        })
    }

    /// The group's committed offset for `partition`.
    pub(crate) fn get(&self, group: &str, partition: u32) -> Option<u64> {
        lock(&self.groups).get(group)?.get(&partition).copied()
    }

    /// Durably records `offsets` for `group`.
    pub(crate) fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        validate_group(group)?;
        let mut groups = lock(&self.groups);
        if !groups.contains_key(group) && groups.len() >= MAX_GROUPS {
            return Err(LogError::Invalid(format!(
                "too many consumer groups (limit {MAX_GROUPS})"
            )));
        }
        let mut next = groups.clone();
        let entry = next.entry(group.to_owned()).or_default();
        for &(partition, offset) in offsets {
            entry.insert(partition, offset);
        }
        self.persist(next.clone())?;
        *groups = next;
        Ok(())
    }

    /// Forgets a group. Returns whether it existed.
    pub(crate) fn delete(&self, group: &str) -> Result<bool, LogError> {
        let mut groups = lock(&self.groups);
        if !groups.contains_key(group) {
            return Ok(false);
        }
        let mut next = groups.clone();
        next.remove(group);
        self.persist(next.clone())?;
        *groups = next;
        Ok(true)
    }

    /// The offset below which no known group needs `partition` any more:
    /// the minimum over groups, where a group that has not committed this
    /// partition counts as 0. `None` when no group is known.
    pub(crate) fn min_committed(&self, partition: u32) -> Option<u64> {
        lock(&self.groups)
            .values()
            .map(|g| g.get(&partition).copied().unwrap_or(0))
            .min()
    }

    fn persist(&self, groups: Groups) -> Result<(), LogError> {
        let file = OffsetsFile {
            version: VERSION,
            groups,
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| LogError::Backend(e.to_string()))?;
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        sync_dir(&self.dir)?;
        Ok(())
    }
}

/// Checks a group name: 1 to [`MAX_GROUP_NAME`] bytes, no control characters.
pub(crate) fn validate_group(group: &str) -> Result<(), LogError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME || group.chars().any(char::is_control) {
        return Err(LogError::Invalid(format!(
            "group names are 1 to {MAX_GROUP_NAME} bytes without control characters: {group:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reload_and_min_is_conservative() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OffsetStore::load(dir.path()).expect("load");
        assert_eq!(
            store.min_committed(0),
            None,
            "no group: nothing pins the log"
        );
        store.commit("a", &[(0, 10), (1, 4)]).expect("commit");
        store.commit("b", &[(0, 7)]).expect("commit");
        store.commit("a", &[(0, 12)]).expect("commit");
        let store = OffsetStore::load(dir.path()).expect("reload");
        assert_eq!(store.get("a", 0), Some(12));
        assert_eq!(store.get("a", 1), Some(4));
        assert_eq!(store.get("b", 1), None);
        assert_eq!(store.min_committed(0), Some(7));
        assert_eq!(
            store.min_committed(1),
            Some(0),
            "b has not committed partition 1"
        );
        assert!(store.delete("b").expect("delete"));
        assert!(!store.delete("b").expect("delete"));
        assert_eq!(
            OffsetStore::load(dir.path())
                .expect("reload")
                .min_committed(1),
            Some(4)
        );
    }

    #[test]
    fn bad_group_names_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OffsetStore::load(dir.path()).expect("load");
        for name in ["", "a\nb", &"x".repeat(MAX_GROUP_NAME + 1)] {
            assert!(
                matches!(store.commit(name, &[(0, 1)]), Err(LogError::Invalid(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_corrupt_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE_NAME), b"{\"version\":1,\"gro").expect("write");
        assert!(matches!(
            OffsetStore::load(dir.path()),
            Err(LogError::Corrupt(_))
        ));
    }
}

//! The folder of containers: create, find, read, update and delete them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::lock::ContainerLock;
use super::names;
use super::record::ContainerRecord;
use super::state::{ContainerState, Status};
use super::ContainerError;

const RECORD_FILE: &str = "config.json";
const STATE_FILE: &str = "state.json";

/// `<root>/containers`, one folder per container.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

impl ContainerStore {
    pub fn open(berth_root: &Path) -> Result<ContainerStore, ContainerError> {
        let dir = berth_root.join("containers");
        fs::create_dir_all(&dir).map_err(ContainerError::io(&dir))?;
        Ok(ContainerStore { dir })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.log")
    }

    /// Locks one container against concurrent changes.
    pub fn lock(&self, id: &str) -> Result<ContainerLock, ContainerError> {
        ContainerLock::acquire(&self.dir(id).join("lock"))
    }

    /// A fresh 64-hex id and the name to use (the given one, checked, or a generated one).
    pub fn new_identity(&self, name: Option<&str>) -> Result<(String, String), ContainerError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(ContainerError::Random)?;
        let id = hex::encode(bytes);
        let name = match name {
            Some(n) if names::is_valid(n) => n.to_string(),
            Some(n) => return Err(ContainerError::InvalidName(n.to_string())),
            None => names::generate(&bytes),
        };
        Ok((id, name))
    }

    /// Writes a new container's folder, refusing a name another container has.
    pub fn create(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        let _all = ContainerLock::acquire(&self.dir.with_extension("lock"))?;
        for other in self.list()? {
            if other.name == record.name {
                return Err(ContainerError::NameInUse {
                    name: record.name.clone(),
                    id: other.id,
                });
            }
        }
        let dir = self.dir(&record.id);
        for sub in ["upper", "work", "rootfs"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(ContainerError::io(&path))?;
        }
        write_json(&dir.join(STATE_FILE), &ContainerState::created())?;
        // The record goes last: a folder without it is an unfinished create, skipped by `list`.
        write_json(&dir.join(RECORD_FILE), record)
    }

    /// Every container with a complete record, oldest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        let entries = fs::read_dir(&self.dir).map_err(ContainerError::io(&self.dir))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ContainerError::io(&self.dir))?;
            let path = entry.path().join(RECORD_FILE);
            if !path.exists() {
                continue;
            }
            match read_json::<ContainerRecord>(&path) {
                Ok(record) => records.push(record),
                // A folder being removed right now: skip it.
                Err(ContainerError::Io { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        records.sort_by_key(|r| r.created);
        Ok(records)
    }

    /// Finds a container by full id, name, or unique id prefix, like Docker.
    pub fn find(&self, name_or_id: &str) -> Result<ContainerRecord, ContainerError> {
        let wanted = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.id == wanted || r.name == wanted) {
            return Ok(r.clone());
        }
        let mut by_prefix = all.iter().filter(|r| r.id.starts_with(wanted));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(r), None) if !wanted.is_empty() => Ok(r.clone()),
            (Some(_), Some(_)) => Err(ContainerError::Ambiguous(wanted.to_string())),
            _ => Err(ContainerError::NotFound(wanted.to_string())),
        }
    }

    /// The state as recorded, repaired if the container's process died without anyone noticing.
    /// Must not be called while holding the container's lock (use [`Self::load_state`] then).
    pub fn state(&self, id: &str) -> Result<ContainerState, ContainerError> {
        let state = self.load_state(id)?;
        // While the monitor lives, it records the exit itself (perhaps this very moment).
        if !state.is_lost() {
            return Ok(state);
        }
        // Check again under the lock: the monitor may be writing the exit right now.
        let _lock = self.lock(id)?;
        let mut state = self.load_state(id)?;
        if state.is_lost() {
            state.status = Status::Exited;
            state.exit_code.get_or_insert(255);
            state.finished_at.get_or_insert_with(chrono::Utc::now);
            state.error.get_or_insert_with(|| {
                "berth's monitor was gone before the container: its exit status is unknown".into()
            });
            state.pid = None;
            self.save_state(id, &state)?;
        }
        Ok(state)
    }

    /// The state file as it is, without any repair.
    pub fn load_state(&self, id: &str) -> Result<ContainerState, ContainerError> {
        read_json(&self.dir(id).join(STATE_FILE))
    }

    /// Replaces the state file atomically. Callers hold the container's lock.
    pub fn save_state(&self, id: &str, state: &ContainerState) -> Result<(), ContainerError> {
        write_json(&self.dir(id).join(STATE_FILE), state)
    }

    /// Deletes a container's folder (its upper layer and log included).
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let dir = self.dir(id);
        // Drop the record first so a crash half-way leaves no container that looks whole.
        match fs::remove_file(dir.join(RECORD_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ContainerError::io(&dir)(e)),
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerError::io(&dir)(e)),
        }
    }
}

/// Names of the containers created from an image, for `rmi`'s refusal.
pub fn users_of_image(berth_root: &Path, image_id: &str) -> Result<Vec<String>, ContainerError> {
    let store = ContainerStore::open(berth_root)?;
    Ok(store
        .list()?
        .into_iter()
        .filter(|r| r.image_id == image_id)
        .map(|r| r.name)
        .collect())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContainerError> {
    let bytes = fs::read(path).map_err(ContainerError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ContainerError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ContainerError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| ContainerError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let mut file = fs::File::create(&tmp).map_err(ContainerError::io(&tmp))?;
    file.write_all(&bytes).map_err(ContainerError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(ContainerError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::{HostConfig, ProcessConfig};

    fn record(store: &ContainerStore, name: Option<&str>) -> ContainerRecord {
        let (id, name) = store.new_identity(name).unwrap();
        ContainerRecord {
            id,
            name,
            created: chrono::Utc::now(),
            image_id: "sha256:abc".into(),
            image_name: "busybox".into(),
            hostname: "h".into(),
            process: ProcessConfig {
                args: vec!["true".into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                tty: false,
                interactive: false,
            },
            host: HostConfig::default(),
        }
    }

    #[test]
    fn create_find_and_remove() {
        let root = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(root.path()).unwrap();
        let r = record(&store, Some("web"));
        store.create(&r).unwrap();
        assert_eq!(store.find("web").unwrap().id, r.id);
        assert_eq!(store.find(&r.id[..5]).unwrap().id, r.id);
        assert_eq!(store.state(&r.id).unwrap().status, Status::Created);
        assert_eq!(
            users_of_image(root.path(), "sha256:abc").unwrap(),
            vec!["web".to_string()]
        );
        store.remove(&r.id).unwrap();
        assert!(matches!(
            store.find("web"),
            Err(ContainerError::NotFound(_))
        ));
        assert!(!store.dir(&r.id).exists());
    }

    #[test]
    fn names_are_unique() {
        let root = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(root.path()).unwrap();
        store.create(&record(&store, Some("web"))).unwrap();
        let again = record(&store, Some("web"));
        assert!(matches!(
            store.create(&again),
            Err(ContainerError::NameInUse { .. })
        ));
        assert!(matches!(
            store.new_identity(Some("bad/name")),
            Err(ContainerError::InvalidName(_))
        ));
    }

    #[test]
    fn a_running_container_whose_process_vanished_is_repaired() {
        let root = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(root.path()).unwrap();
        let r = record(&store, None);
        store.create(&r).unwrap();
        let state = ContainerState {
            status: Status::Running,
            pid: Some(i32::MAX - 1),
            pid_start_time: Some(1),
            ..ContainerState::created()
        };
        store.save_state(&r.id, &state).unwrap();
        let repaired = store.state(&r.id).unwrap();
        assert_eq!(repaired.status, Status::Exited);
        assert_eq!(repaired.exit_code, Some(255));
        assert!(repaired.error.is_some());
    }
}

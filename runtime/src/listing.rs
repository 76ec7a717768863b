//! `ListContainers` without building messages per call.
//!
//! kubelet lists every container each second. Building 1000 `Container`
//! messages from the records (a dozen strings and two maps each, cloned under
//! the records' lock) and encoding them was most of the server's share of a
//! listing. Here each container's message is encoded once, when its record
//! is stored, and a listing copies those bytes (`service::listing_server`
//! answers the RPC with them, bypassing prost).
//!
//! The state is the only listed field that changes over a container's life:
//! it is kept apart and written after the other fields at listing time.
//! Protobuf parsers accept fields in any order, so the answer decodes to the
//! same message prost would have encoded.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{BufMut, Bytes};
use gantry_proto::cri::v1::{
    Container, ContainerFilter, ContainerState, ImageSpec, ListContainersResponse, StreamContainersResponse,
};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::records::ContainerRecord;
use crate::shim_client::{State, Status as ShimStatus};

/// `ListContainersResponse.containers` and `Container.state`.
const CONTAINERS_FIELD: u32 = 1;
const STATE_FIELD: u32 = 6;

/// The CRI state of a shim status (`shim_client::Status` as i32).
pub fn container_status_code(shim_status: i32) -> i32 {
    match ShimStatus::try_from(shim_status) {
        Ok(ShimStatus::Created) => ContainerState::ContainerCreated as i32,
        Ok(ShimStatus::Running) => ContainerState::ContainerRunning as i32,
        Ok(ShimStatus::Stopped) => ContainerState::ContainerExited as i32,
        _ => ContainerState::ContainerUnknown as i32,
    }
}

/// A container as listed.
struct Entry {
    sandbox_id: String,
    labels: HashMap<String, String>,
    /// The last known state, from the shim.
    state: State,
    /// Its `Container` message without `state`.
    encoded: Bytes,
}

/// Every container's listing entry and last known state, readable without
/// the records' (async) lock and without asking a shim.
#[derive(Default)]
pub struct Listing {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Listing {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the container of `record` (again, if its record changed; the
    /// known state is kept).
    pub fn insert(&self, record: &ContainerRecord) {
        let message = Container {
            id: record.id.clone(),
            pod_sandbox_id: record.sandbox_id.clone(),
            metadata: record.config.metadata.clone(),
            image: Some(ImageSpec { image: record.image_name.clone(), ..Default::default() }),
            image_ref: record.image_id.clone(),
            state: 0, // written at listing time
            created_at: record.created_at,
            labels: record.config.labels.clone(),
            annotations: record.config.annotations.clone(),
            image_id: record.image_id.clone(),
        };
        let encoded = Bytes::from(message.encode_to_vec());
        let mut entries = self.write();
        let state = entries.remove(&record.id).map(|e| e.state).unwrap_or_default();
        entries.insert(
            record.id.clone(),
            Entry { sandbox_id: record.sandbox_id.clone(), labels: record.config.labels.clone(), state, encoded },
        );
    }

    /// Records the container's state; ignored once it is removed (a watcher
    /// may learn an exit after the container is gone).
    pub fn set_state(&self, id: &str, state: State) {
        if let Some(e) = self.write().get_mut(id) {
            e.state = state;
        }
    }

    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// The last known state (the default if unknown).
    pub fn state(&self, id: &str) -> State {
        self.read().get(id).map(|e| e.state.clone()).unwrap_or_default()
    }

    /// The last known shim status (`Status` as i32), without cloning the state.
    pub fn status(&self, id: &str) -> i32 {
        self.read().get(id).map_or(0, |e| e.state.status)
    }

    /// The containers the filter selects: ID and pod ID by prefix, every
    /// selector label with the same value, the state if given.
    pub fn select(&self, filter: &ContainerFilter) -> Selected {
        let entries = self.read();
        let mut selected = Vec::with_capacity(entries.len());
        for (id, e) in entries.iter() {
            if !filter.id.is_empty() && !id.starts_with(&filter.id)
                || !filter.pod_sandbox_id.is_empty() && !e.sandbox_id.starts_with(&filter.pod_sandbox_id)
                || !filter.label_selector.iter().all(|(k, v)| e.labels.get(k) == Some(v))
            {
                continue;
            }
            let state = container_status_code(e.state.status);
            if filter.state.as_ref().is_some_and(|f| f.state != state) {
                continue;
            }
            selected.push((e.encoded.clone(), state));
        }
        Selected(selected)
    }
}

/// Containers a listing selected: their encoded messages and CRI states,
/// written out as a `ListContainersResponse`.
pub struct Selected(Vec<(Bytes, i32)>);

impl Selected {
    fn state_len(state: i32) -> usize {
        // proto3 leaves a zero out; `as u64` sign-extends as protobuf's int32 does
        if state == 0 {
            0
        } else {
            1 + encoded_len_varint(state as u64)
        }
    }

    /// Bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|(m, state)| {
                let len = m.len() + Self::state_len(*state);
                1 + encoded_len_varint(len as u64) + len
            })
            .sum()
    }

    /// Writes the `ListContainersResponse`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        for (message, state) in &self.0 {
            encode_key(CONTAINERS_FIELD, WireType::LengthDelimited, buf);
            encode_varint((message.len() + Self::state_len(*state)) as u64, buf);
            buf.put_slice(message);
            if *state != 0 {
                encode_key(STATE_FIELD, WireType::Varint, buf);
                encode_varint(*state as u64, buf);
            }
        }
    }

    /// The selection as `StreamContainersResponse`s of at most `per_chunk`
    /// containers each, decoded one chunk at a time as the stream is read:
    /// memory holds the shared encoded entries and one chunk, not the
    /// whole answer as messages. (Field 1 of both responses is the list.)
    pub fn into_chunks(
        self,
        per_chunk: usize,
    ) -> impl Iterator<Item = Result<StreamContainersResponse, prost::DecodeError>> + Send {
        let entries = self.0;
        let per_chunk = per_chunk.max(1);
        // An empty selection is still one (empty) answer, as the unary call's.
        (0..entries.len().div_ceil(per_chunk).max(1)).map(move |i| {
            let chunk = Selected(
                entries[(i * per_chunk).min(entries.len())..((i + 1) * per_chunk).min(entries.len())].to_vec(),
            );
            let mut buf = Vec::with_capacity(chunk.encoded_len());
            chunk.encode(&mut buf);
            StreamContainersResponse::decode(buf.as_slice())
        })
    }

    /// As a message (for callers in this process; the RPC never decodes).
    pub fn into_response(self) -> Result<ListContainersResponse, prost::DecodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        ListContainersResponse::decode(buf.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::cri::v1::{ContainerConfig, ContainerMetadata, ContainerStateValue};

    fn record(id: &str, pod: &str, app: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: pod.into(),
            config: ContainerConfig {
                metadata: Some(ContainerMetadata { name: format!("name-{id}"), attempt: 2 }),
                labels: HashMap::from([("app".into(), app.into()), ("io.kubernetes.pod.uid".into(), pod.into())]),
                annotations: HashMap::from([("io.kubernetes.container.hash".into(), "4f1e5b3a".into())]),
                ..Default::default()
            },
            image_id: "sha256:abc".into(),
            image_name: "busybox:latest".into(),
            created_at: 1_700_000_000_000_000_000,
            log_path: "x.log".into(),
            stop_signal: String::new(),
            volume_chain_ids: vec![],
            chain_ids: vec![],
            identity: None,
        }
    }

    /// What the handler built before listings were pre-encoded.
    fn expected(r: &ContainerRecord, state: i32) -> Container {
        Container {
            id: r.id.clone(),
            pod_sandbox_id: r.sandbox_id.clone(),
            metadata: r.config.metadata.clone(),
            image: Some(ImageSpec { image: r.image_name.clone(), ..Default::default() }),
            image_ref: r.image_id.clone(),
            state,
            created_at: r.created_at,
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            image_id: r.image_id.clone(),
        }
    }

    fn shim(status: ShimStatus) -> State {
        State { status: status as i32, ..Default::default() }
    }

    fn ids(filter: ContainerFilter, listing: &Listing) -> Vec<String> {
        let mut ids: Vec<String> =
            listing.select(&filter).into_response().expect("decodes").containers.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn listing_decodes_to_the_messages_prost_builds_and_filters() {
        let listing = Listing::default();
        let records = [record("aa1", "pod1", "web"), record("aa2", "pod1", "db"), record("bb3", "pod2", "web")];
        for r in &records {
            listing.insert(r);
        }
        listing.set_state("aa1", shim(ShimStatus::Running));
        listing.set_state("aa2", shim(ShimStatus::Stopped));
        // bb3 stays Unknown: no state learnt yet

        let selected = listing.select(&ContainerFilter::default());
        let len = selected.encoded_len();
        let mut bytes = Vec::new();
        selected.encode(&mut bytes);
        assert_eq!(bytes.len(), len, "encoded_len is exact");
        let mut listed = ListContainersResponse::decode(bytes.as_slice()).expect("decodes").containers;
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        let states =
            [ContainerState::ContainerRunning, ContainerState::ContainerExited, ContainerState::ContainerUnknown];
        let want: Vec<Container> = records.iter().zip(states).map(|(r, s)| expected(r, s as i32)).collect();
        assert_eq!(listed, want);

        // A state back to CREATED (0, left out by proto3) and a changed record.
        listing.set_state("bb3", shim(ShimStatus::Created));
        let mut changed = record("aa1", "pod1", "web");
        changed.config.annotations.insert("more".into(), "yes".into());
        listing.insert(&changed);
        let mut listed = listing.select(&ContainerFilter::default()).into_response().expect("decodes").containers;
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(listed[0], expected(&changed, ContainerState::ContainerRunning as i32), "state kept");
        assert_eq!(listed[2].state, ContainerState::ContainerCreated as i32);

        let by = |f: ContainerFilter| ids(f, &listing);
        assert_eq!(by(ContainerFilter { id: "aa".into(), ..Default::default() }), ["aa1", "aa2"]);
        assert_eq!(by(ContainerFilter { id: "aa2".into(), ..Default::default() }), ["aa2"]);
        assert_eq!(by(ContainerFilter { pod_sandbox_id: "pod2".into(), ..Default::default() }), ["bb3"]);
        let web = HashMap::from([("app".to_string(), "web".to_string())]);
        assert_eq!(by(ContainerFilter { label_selector: web.clone(), ..Default::default() }), ["aa1", "bb3"]);
        let both =
            HashMap::from([("app".to_string(), "web".to_string()), ("io.kubernetes.pod.uid".into(), "pod2".into())]);
        assert_eq!(by(ContainerFilter { label_selector: both, ..Default::default() }), ["bb3"]);
        let state = |s: ContainerState| Some(ContainerStateValue { state: s as i32 });
        assert_eq!(
            by(ContainerFilter { state: state(ContainerState::ContainerExited), ..Default::default() }),
            ["aa2"]
        );
        assert_eq!(
            by(ContainerFilter { state: state(ContainerState::ContainerCreated), ..Default::default() }),
            ["bb3"]
        );
        let none = ContainerFilter {
            id: "aa".into(),
            label_selector: web,
            state: state(ContainerState::ContainerExited),
            ..Default::default()
        };
        assert!(by(none).is_empty());

        // Removed: gone from the listing, and a late state does not bring it back.
        listing.remove("aa2");
        listing.set_state("aa2", shim(ShimStatus::Stopped));
        assert_eq!(by(ContainerFilter::default()), ["aa1", "bb3"]);
        assert_eq!(listing.status("aa2"), 0);
        assert_eq!(listing.state("aa1").status, ShimStatus::Running as i32);
    }
}

//! The storage driver (seed 000), implemented once over `object_store`.
//!
//! Architecture Invariant: this module holds no key and decrypts nothing.
//! It moves envelopes (JSON with ciphertext) and packs (sealed records)
//! under keyed agent ids; what it stores is blind by construction.
//!
//! Remote layout, per agent (`docs/FORMAT.md`):
//!
//! ```text
//! <prefix>/sovseal-v1/<agent id hex>/envelopes/<seq, 20 digits>.json
//! <prefix>/sovseal-v1/<agent id hex>/packs/<seq, 20 digits>-<envelope hash, 32 hex>-<part, 4 digits>.pack
//! ```
//!
//! A snapshot's pack parts hold the sealed objects first committed in that
//! snapshot, in the local pack record format, named by the envelope they
//! belong to: a second writer's parts land beside the first's, never over
//! them. Envelopes are created with a conditional put (`PutMode::Create`):
//! a second writer cannot replace one, so the envelope is the one fence.

use crate::repo::batch::{self, Batch};
use crate::repo::pack;
use crate::repo::segment;
use crate::seal::keys::AgentId;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::collections::HashSet;
use std::sync::Arc;

/// The small runtime that drives a remote from synchronous code (the
/// replicator thread, restore, the CLI): one thread, timers and sockets.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

/// Outcome of creating an envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Written now.
    New,
    /// The same bytes were already there (a retried upload).
    AlreadyThere,
    /// Different bytes are there: a fork.
    Conflict,
}

/// One remote: an object store and a prefix in it.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// Upload batches read or written through this remote (shared by its
    /// clones).
    batches: Arc<Batches>,
    /// A file remote's store: its deletes are synced here, as its puts
    /// are by the store (but for an upload batch's envelopes, whose
    /// directory is synced here once: [`Remote::sync_envelopes`]).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
}

/// The name of an upload batch's two objects: its snapshots, the first 16
/// bytes of its last snapshot's envelope hash (so that a forked history's
/// batches land beside the original's, never over them), and a generation
/// that a prune or a redaction taking records out of it increases (so
/// that its objects are never replaced in place: a reader holding an
/// older generation finds it gone and looks again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct BatchName {
    first: u64,
    last: u64,
    hash: [u8; 16],
    generation: u32,
}

/// Batch indexes read through a remote, by the snapshots whose records
/// they hold, so that a snapshot's next read goes to its batch at once.
#[derive(Default)]
struct Batches {
    by_seq: std::sync::Mutex<std::collections::HashMap<(AgentId, u64), Remembered>>,
    /// Held while a batch is rewritten without a member (a prune's
    /// snapshots are pruned concurrently).
    edit: futures::lock::Mutex<()>,
}

/// A member's batch, its envelope hash and its place there.
type Remembered = (BatchName, [u8; 32], batch::Place);

/// Members remembered before the map is emptied (a bound on memory: a
/// lazy reader of a long history meets many).
const BATCH_MEMBERS_KEPT: usize = 1 << 18;

type Fetch<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<T>>> + Send + 'a>>;

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", shown(&self.url))
    }
}

/// `url` with its password masked (`user:***@`, `password=***`), for
/// messages, logs and `sovseal status`. Textual, so that a URL the `url`
/// crate does not parse (`postgres://user:pw@/db?host=/socket`) is masked
/// too.
pub fn shown(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let auth_end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..auth_end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some((head, query)) = out.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}?{}", query.join("&"));
    }
    out
}

fn remote_err(op: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote {
        op: op.to_owned(),
        detail: e.to_string(),
    }
}

/// The sequence number of a `<seq, 20 digits>.json` file directly in
/// `dir`: only the names this module writes, the names `get_*` read back.
fn seq_named(dir: &Path, location: &Path, suffix: &str) -> Option<u64> {
    location
        .filename()
        .filter(|_| location.parts().count() == dir.parts().count() + 1)
        .and_then(|f| f.strip_suffix(suffix))
        .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        // Sequence numbers start at 1: a name of 0 is none a writer makes.
        .filter(|s| *s > 0)
}

/// The sequence number and envelope hash (the first 16 bytes, hex) that
/// `location` names, an object `<seq, 20 digits>-<32 characters><suffix>`
/// directly in `dir` (anything else is left out).
fn seq_hash_named<'a>(location: &'a Path, dir: &Path, suffix: &str) -> Option<(u64, &'a str)> {
    location
        .filename()
        .filter(|_| location.parts().count() == dir.parts().count() + 1)
        .and_then(|f| f.strip_suffix(suffix))
        .and_then(seq_hash)
}

/// `<seq, 20 digits>-<32 characters>`, read.
fn seq_hash(name: &str) -> Option<(u64, &str)> {
    let (seq, h) = name.split_once('-')?;
    let named = seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()) && h.len() == 32;
    Some((seq.parse().ok().filter(|_| named)?, h))
}

/// The sequence number, envelope hash (first 16 bytes) and part that
/// `location` names, a pack part `<seq>-<hash>-<part, 4 digits>.pack`
/// directly in `dir` (anything else is left out).
fn part_named(location: &Path, dir: &Path) -> Option<(u64, [u8; 16], u32)> {
    if location.parts().count() != dir.parts().count() + 1 {
        return None;
    }
    let (stem, part) = location
        .filename()?
        .strip_suffix(".pack")?
        .rsplit_once('-')?;
    let (seq, h) = seq_hash(stem)?;
    // (`{:04}`: more digits from part 10,000 on.)
    let part = Some(part).filter(|p| p.len() >= 4 && p.bytes().all(|b| b.is_ascii_digit()))?;
    Some((seq, crate::hex::decode_n::<16>(h)?, part.parse().ok()?))
}

/// Which aligned ranges of `batches/` a listing covers.
enum Ranges {
    /// Every range.
    All,
    /// The range starting at this snapshot.
    One(u64),
    /// Every range from the one starting at this snapshot on.
    From(u64),
}

/// The batch named by `location`, an object `batches/<range>/<first>-<last>-<hash>-<generation>.<ext>`
/// this module writes (anything else is left out).
fn batch_named(location: &Path, ext: &str) -> Option<BatchName> {
    let parts: Vec<_> = location.parts().collect();
    let (range, file) = match parts.as_slice() {
        [.., r, f] => (r.as_ref(), f.as_ref()),
        _ => return None,
    };
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    let mut it = file.strip_suffix(ext)?.strip_suffix('.')?.split('-');
    let (first, last, hash, generation) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some()
        || !digits(range, 20)
        || !digits(first, 20)
        || !digits(last, 20)
        || !digits(generation, 4)
    {
        return None;
    }
    let name = BatchName {
        first: first.parse().ok()?,
        last: last.parse().ok()?,
        hash: crate::hex::decode_n::<16>(hash)?,
        generation: generation.parse().ok()?,
    };
    let aligned = range.parse::<u64>().ok()? == segment::first_of(name.first)
        && segment::first_of(name.first) == segment::first_of(name.last);
    (name.first >= 1 && name.first <= name.last && aligned).then_some(name)
}

/// A listing error: a name the store itself cannot express (not UTF-8, a
/// control character) is something written there to break us, an
/// integrity error (exit 3) naming the listing; anything else is the
/// store failing (exit 1).
fn list_err(op: &str, dir: &Path, e: object_store::Error) -> Error {
    match e {
        object_store::Error::InvalidPath { source } => Error::corrupt(
            format!("remote listing of {dir}"),
            format!(
                "it holds a name no sovseal writer makes ({source}); refusing the whole listing"
            ),
        ),
        e => remote_err(op, e),
    }
}

impl Remote {
    /// Opens a remote from a URL: `file:///dir`, `memory://`,
    /// `s3://bucket/prefix` (credentials, region and endpoint from the
    /// standard `AWS_*` variables, so R2 and MinIO work through
    /// `AWS_ENDPOINT`), `gs://bucket/prefix`, `az://container/prefix`.
    pub fn open(url_text: &str) -> Result<Self> {
        Self::open_with(url_text, &[])
    }

    /// Like [`Remote::open`], with store options on top of the environment
    /// (object_store configuration keys such as `aws_endpoint`,
    /// `aws_allow_http`, `aws_access_key_id`).
    pub fn open_with(url_text: &str, options: &[(String, String)]) -> Result<Self> {
        let url = url::Url::parse(url_text)
            .map_err(|e| Error::Invalid(format!("remote URL {:?}: {e}", shown(url_text))))?;
        let bad =
            |e: object_store::Error| Error::Invalid(format!("remote {}: {e}", shown(url_text)));
        let prefix = |p: &str| {
            Path::parse(p.trim_matches('/'))
                .map_err(|e| Error::Invalid(format!("remote path: {e}")))
        };
        let (store, path): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|_| Error::Invalid(format!("remote {url_text}: not a local path")))?;
                crate::fsutil::create_private_dir(&dir)?;
                // object_store's local backend follows symlinks. Its files
                // sit in `sovseal-v1/<agent>/<kind>/`, and an upload batch's
                // in `sovseal-v1/<agent>/batches/<range>/`: those
                // directories are checked, not the (many) files in them.
                crate::fsutil::refuse_symlinks_below(&dir, 3)?;
                if let Ok(agents) = std::fs::read_dir(dir.join("sovseal-v1")) {
                    for agent in agents {
                        let agent = agent.map_err(|e| Error::io(&dir, e))?;
                        let batches = agent.path().join("batches");
                        if batches.is_dir() {
                            crate::fsutil::refuse_symlinks_below(&batches, 1)?;
                        }
                    }
                }
                // A put returns once the file and its name are on the disk,
                // as a cloud store's does once the object is durable (an
                // upload batch's envelopes: once the batch's directory sync
                // returns, `Remote::put_envelope_unsynced`). The
                // replicator records an upload as done after its put, and a
                // remote on this machine's disk (the default one is) would
                // otherwise lose to a power cut what that record counts, or
                // keep an envelope torn under its name (read back as
                // another writer's: a false fork).
                let local = Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(bad)?
                        .with_fsync(true),
                );
                let mut remote = Self::with_store(local.clone(), Path::default(), url_text);
                remote.local = Some(local);
                return Ok(remote);
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                prefix(url.path())?,
            ),
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url_text)
                    .with_retry(request_retries());
                for (k, v) in options {
                    let key = k
                        .parse()
                        .map_err(|_| Error::Invalid(format!("unknown S3 option {k:?}")))?;
                    b = b.with_config(key, v);
                }
                (Arc::new(b.build().map_err(bad)?), prefix(url.path())?)
            }
            "gs" => (
                Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(url_text)
                        .with_retry(request_retries())
                        .build()
                        .map_err(bad)?,
                ),
                prefix(url.path())?,
            ),
            "az" | "azure" | "abfs" | "abfss" => (
                Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(url_text)
                        .with_retry(request_retries())
                        .build()
                        .map_err(bad)?,
                ),
                prefix(url.path())?,
            ),
            "postgres" | "postgresql" => (
                Arc::new(
                    crate::repo::postgres::PgStore::connect(url_text)
                        .map_err(|e| Error::Invalid(format!("remote {}: {e}", shown(url_text))))?,
                ),
                Path::default(),
            ),
            other => {
                return Err(Error::Invalid(format!(
                    "remote scheme {other:?} is not supported (file://, memory://, s3://, gs://, az://, postgres://)"
                )));
            }
        };
        Ok(Self::with_store(store, path, url_text))
    }

    /// A remote over any object store (tests wrap stores to inject faults).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: Path, url: &str) -> Self {
        Remote {
            store,
            prefix,
            url: url.to_owned(),
            batches: Arc::default(),
            local: None,
        }
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password masked ([`shown`]), for messages.
    pub fn shown_url(&self) -> String {
        shown(&self.url)
    }

    fn agent_dir(&self, agent: &AgentId) -> Path {
        self.prefix.clone().join("sovseal-v1").join(agent.to_hex())
    }

    fn envelopes_dir(&self, agent: &AgentId) -> Path {
        self.agent_dir(agent).join("envelopes")
    }

    fn envelope_path(&self, agent: &AgentId, seq: u64) -> Path {
        self.envelopes_dir(agent).join(format!("{seq:020}.json"))
    }

    fn pack_path(&self, agent: &AgentId, seq: u64, envelope: &[u8; 32], part: u32) -> Path {
        let h = crate::hex::encode(&envelope[..16]);
        self.agent_dir(agent)
            .join("packs")
            .join(format!("{seq:020}-{h}-{part:04}.pack"))
    }

    /// Stores `bytes` at `path`, replacing any object there.
    async fn put(&self, op: &str, path: &Path, bytes: impl Into<PutPayload>) -> Result<()> {
        self.store
            .put(path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| remote_err(op, e))
    }

    async fn get(&self, op: &str, path: &Path) -> Result<Option<Vec<u8>>> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(|e| remote_err(op, e))?.to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err(op, e)),
        }
    }

    /// Creates the envelope of `seq` unless one exists (seed 000 `put`).
    pub async fn put_envelope(&self, agent: &AgentId, seq: u64, json: Vec<u8>) -> Result<Created> {
        let path = self.envelope_path(agent, seq);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(json.clone()), opts)
            .await
        {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there = self.already_there(&path, &json).await?;
                // Ours, from an earlier try: its name may be one an upload
                // batch made without a sync ([`Remote::put_envelope_unsynced`])
                // and never synced (the batch failed or the daemon died),
                // and the store does not sync a name it finds there.
                if there == Created::AlreadyThere {
                    self.sync_envelopes(agent).await?;
                }
                Ok(there)
            }
            Err(e) => Err(remote_err("put envelope", e)),
        }
    }

    /// After a conditional create of the envelope `json` at `path` found a
    /// file there: the same envelope (an upload tried again) or another
    /// writer's.
    async fn already_there(&self, path: &Path, json: &[u8]) -> Result<Created> {
        match self.get("get envelope", path).await? {
            Some(there) if there == json => Ok(Created::AlreadyThere),
            _ => Ok(Created::Conflict),
        }
    }

    /// [`Remote::put_envelope`], except that on a file remote the new name
    /// is not synced: the file's data is synced before it takes its name,
    /// and [`Remote::sync_envelopes`] must follow before anything counts
    /// on the envelope being there (an upload batch's envelopes then cost
    /// one disk sync each and one for them all, where a put of its own
    /// syncs the directory too). On other remotes, [`Remote::put_envelope`].
    pub async fn put_envelope_unsynced(
        &self,
        agent: &AgentId,
        seq: u64,
        json: Vec<u8>,
    ) -> Result<Created> {
        let path = self.envelope_path(agent, seq);
        let Some(file) = self.local_file(&path)? else {
            return self.put_envelope(agent, seq, json).await;
        };
        let (at, bytes) = (file.clone(), json.clone());
        let put = tokio::task::spawn_blocking(move || create_unsynced(&at, &bytes))
            .await
            .map_err(|e| Error::Invalid(format!("put envelope: {e}")))?;
        match put {
            Ok(()) => Ok(Created::New),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.already_there(&path, &json).await
            }
            // The envelopes' directory not made yet: a put that makes it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.put_envelope(agent, seq, json).await
            }
            Err(e) => Err(Error::io(&file, e)),
        }
    }

    /// On a file remote, syncs the directory of `agent`'s envelopes: the
    /// names [`Remote::put_envelope_unsynced`] made are on the disk when it
    /// returns. Nothing to do on other remotes.
    pub async fn sync_envelopes(&self, agent: &AgentId) -> Result<()> {
        let dir = self.envelopes_dir(agent);
        match self.local_file(&dir)? {
            Some(dir) => sync_dir(dir, "sync envelopes").await,
            None => Ok(()),
        }
    }

    /// Where `path` (an object, or a directory of them) is on a file
    /// remote's disk; `None` on other remotes.
    fn local_file(&self, path: &Path) -> Result<Option<std::path::PathBuf>> {
        let Some(local) = &self.local else {
            return Ok(None);
        };
        local
            .path_to_filesystem(path)
            .map(Some)
            .map_err(|e| remote_err("map a path", e))
    }

    /// The envelope of `seq`, if present (seed 000 `get`).
    pub async fn get_envelope(&self, agent: &AgentId, seq: u64) -> Result<Option<Vec<u8>>> {
        self.get("get envelope", &self.envelope_path(agent, seq))
            .await
    }

    /// Sequence numbers named by the `<seq>.json` files under the agent's
    /// `sub` directory, ascending (some stores list unsorted: collect, sort).
    /// The sequence numbers named in `sub`, ascending, those after `after`
    /// only. The listing starts after `after`'s name (S3's `start-after`, a
    /// key range on PostgreSQL): it costs what is listed, not the whole
    /// history, on stores that can start there.
    async fn list_seqs(
        &self,
        agent: &AgentId,
        sub: &str,
        op: &str,
        after: u64,
    ) -> Result<Vec<u64>> {
        let dir = self.agent_dir(agent).join(sub);
        let mut seqs = Vec::new();
        let mut s = if after == 0 {
            self.store.list(Some(&dir))
        } else {
            self.store
                .list_with_offset(Some(&dir), &dir.clone().join(format!("{after:020}.json")))
        };
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| list_err(op, &dir, e))?;
            seqs.extend(seq_named(&dir, &m.location, ".json").filter(|s| *s > after));
        }
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// Whether the remote holds any envelope of `agent`: stops at the
    /// first one listed, so it costs one listing page however long the
    /// history is (the check a mount makes before restoring).
    pub async fn has_envelopes(&self, agent: &AgentId) -> Result<bool> {
        let dir = self.envelopes_dir(agent);
        let mut s = self.store.list(Some(&dir));
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| list_err("list envelopes", &dir, e))?;
            if seq_named(&dir, &m.location, ".json").is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sequence numbers of the envelopes present, ascending, `limit` of them
    /// after `after` (seed 000 `list`, paginated by cursor).
    pub async fn list_envelopes(
        &self,
        agent: &AgentId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let mut seqs = self
            .list_seqs(agent, "envelopes", "list envelopes", after)
            .await?;
        seqs.truncate(limit);
        Ok(seqs)
    }

    /// Deletes the envelope of `seq` (seed 000 `delete`). Missing is fine.
    pub async fn delete_envelope(&self, agent: &AgentId, seq: u64) -> Result<()> {
        self.delete_object("delete envelope", &self.envelope_path(agent, seq))
            .await
    }

    /// Uploads one part of the pack of the snapshot whose envelope hashes to
    /// `envelope`. Idempotent: the part's content is fixed by that snapshot.
    pub async fn put_pack(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        part: u32,
        bytes: impl Into<PutPayload>,
    ) -> Result<()> {
        self.put(
            "put pack",
            &self.pack_path(agent, seq, envelope, part),
            bytes,
        )
        .await
    }

    /// One part of the pack of a snapshot, if present: its own, or for
    /// a snapshot uploaded in a batch, its view there (part 0 alone).
    pub async fn get_pack(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        part: u32,
    ) -> Result<Option<Vec<u8>>> {
        let own = self.pack_path(agent, seq, envelope, part);
        self.own_or_batched(
            agent,
            (seq, envelope, part),
            || Box::pin(self.get("get pack", &own)),
            |name, place| {
                Box::pin(async move {
                    let records = place.start..place.start + place.len;
                    Ok(self
                        .batch_range(agent, &name, records)
                        .await?
                        .map(|r| [&pack::PACK_MAGIC[..], &r].concat()))
                })
            },
        )
        .await
    }

    /// The part index of snapshot `seq` made from its pack parts here,
    /// each read whole, in order (for a snapshot replicated without one):
    /// `None` when it has no part here; the inner error when a part does
    /// not decode.
    pub async fn entries_from_parts(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
    ) -> Result<Option<Result<Vec<super::pack::PartEntry>>>> {
        let mut entries = Vec::new();
        let mut part = 0;
        while let Some(bytes) = self.get_pack(agent, seq, envelope, part).await? {
            match super::pack::part_entries(seq, part, &bytes) {
                Ok(e) => entries.extend(e),
                Err(e) => return Ok(Some(Err(e))),
            }
            part += 1;
        }
        Ok((part > 0).then_some(Ok(entries)))
    }

    /// Whether part `part` of that pack exists (a `HEAD`: nothing read).
    pub async fn has_pack(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        part: u32,
    ) -> Result<bool> {
        Ok(self.pack_size(agent, seq, envelope, part).await?.is_some())
    }

    /// Whether snapshot `seq` has its own part 0 (a `HEAD`), not counting
    /// a batch holding its records.
    pub async fn has_own_pack(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
    ) -> Result<bool> {
        match self
            .store
            .head(&self.pack_path(agent, seq, envelope, 0))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote_err("look for pack", e)),
        }
    }

    /// The size of part `part` of that pack, if it exists (a `HEAD`).
    pub async fn pack_size(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        part: u32,
    ) -> Result<Option<u64>> {
        let own = self.pack_path(agent, seq, envelope, part);
        self.own_or_batched(
            agent,
            (seq, envelope, part),
            || {
                Box::pin(async {
                    match self.store.head(&own).await {
                        Ok(m) => Ok(Some(m.size)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(remote_err("look for pack", e)),
                    }
                })
            },
            |name, place| {
                Box::pin(async move {
                    let there = self.batch_range(agent, &name, 0..0).await?;
                    Ok(there.map(|_| place.view_len()))
                })
            },
        )
        .await
    }

    fn index_path(&self, agent: &AgentId, seq: u64, envelope: &[u8; 32]) -> Path {
        let h = crate::hex::encode(&envelope[..16]);
        self.agent_dir(agent)
            .join("indexes")
            .join(format!("{seq:020}-{h}.idx"))
    }

    /// Stores the part index of a snapshot (`pack::encode_index`): where
    /// each object of its pack parts is, for a lazy restore's single-object
    /// fetches. Replaced when a redaction rewrites the parts.
    pub async fn put_index(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.put(
            "put part index",
            &self.index_path(agent, seq, envelope),
            bytes,
        )
        .await
    }

    /// The part indexes present of the snapshots after `after`, as
    /// (sequence number, the first 16 bytes of the envelope hash their name
    /// carries, hex), ascending. Names this module does not write are left
    /// out. The listing starts after `after`'s names where the store can.
    /// Snapshots whose records an upload batch holds are listed too (each
    /// such batch's index is read).
    pub async fn list_indexes(&self, agent: &AgentId, after: u64) -> Result<Vec<(u64, String)>> {
        let dir = self.agent_dir(agent).join("indexes");
        let mut out = Vec::new();
        // `<after>.idx` sorts after every `<after>-<hash>.idx` ('-' < '.')
        // and before the names of later snapshots.
        let mut s = self
            .store
            .list_with_offset(Some(&dir), &dir.clone().join(format!("{after:020}.idx")));
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| list_err("list part indexes", &dir, e))?;
            let named = seq_hash_named(&m.location, &dir, ".idx")
                .filter(|(seq, h)| *seq > after && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|(seq, h)| (seq, h.to_owned()));
            out.extend(named);
        }
        out.extend(self.batch_members_after(agent, after).await?);
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The part index of a snapshot, if present (snapshots replicated by
    /// builds before lazy restore have none).
    pub async fn get_index(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
    ) -> Result<Option<Vec<u8>>> {
        let own = self.index_path(agent, seq, envelope);
        self.own_or_batched(
            agent,
            (seq, envelope, 0),
            || Box::pin(self.get("get part index", &own)),
            |name, place| {
                Box::pin(async move {
                    let there = self.batch_range(agent, &name, 0..0).await?;
                    Ok(there.map(|_| place.index))
                })
            },
        )
        .await
    }

    /// Deletes the part index of a snapshot. Missing is fine.
    pub async fn delete_index(&self, agent: &AgentId, seq: u64, envelope: &[u8; 32]) -> Result<()> {
        self.delete_object("delete part index", &self.index_path(agent, seq, envelope))
            .await
    }

    fn segment_path(&self, agent: &AgentId, first: u64) -> Path {
        self.agent_dir(agent)
            .join("segments")
            .join(format!("{first:020}.seg"))
    }

    /// Stores the chain segment starting at snapshot `first`
    /// (`segment::encode`), replacing any.
    pub async fn put_segment(&self, agent: &AgentId, first: u64, bytes: Vec<u8>) -> Result<()> {
        self.put("put segment", &self.segment_path(agent, first), bytes)
            .await
    }

    /// The chain segment starting at snapshot `first`, if present.
    pub async fn get_segment(&self, agent: &AgentId, first: u64) -> Result<Option<Vec<u8>>> {
        self.get("get segment", &self.segment_path(agent, first))
            .await
    }

    /// The first snapshots of the chain segments present, ascending (names
    /// this module does not write are left out).
    pub async fn list_segments(&self, agent: &AgentId) -> Result<Vec<u64>> {
        let dir = self.agent_dir(agent).join("segments");
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&dir));
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| list_err("list segments", &dir, e))?;
            out.extend(seq_named(&dir, &m.location, ".seg"));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Deletes the chain segment holding snapshot `seq`, and the tail
    /// segment, before its parts or part index change there, unless
    /// `deleted` says this run did so already (and records it). Missing is
    /// fine.
    pub async fn delete_segment_of(
        &self,
        agent: &AgentId,
        seq: u64,
        deleted: &mut std::collections::BTreeSet<u64>,
    ) -> Result<()> {
        let first = crate::repo::segment::first_of(seq);
        if deleted.insert(first) {
            self.delete_segment(agent, first).await?;
        }
        // (0 names no range: the tail's mark.)
        if deleted.insert(0) {
            self.delete_object("delete tail segment", &self.tail_path(agent))
                .await?;
        }
        Ok(())
    }

    fn tail_path(&self, agent: &AgentId) -> Path {
        self.agent_dir(agent).join("segments").join("tail.seg")
    }

    /// Replaces the tail segment (`segment::encode` of the snapshots after
    /// the last complete range).
    pub async fn put_tail(&self, agent: &AgentId, bytes: Vec<u8>) -> Result<()> {
        self.put("put tail segment", &self.tail_path(agent), bytes)
            .await
    }

    /// The tail segment, if present.
    pub async fn get_tail(&self, agent: &AgentId) -> Result<Option<Vec<u8>>> {
        self.get("get tail segment", &self.tail_path(agent)).await
    }

    async fn delete_object(&self, op: &str, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            // Missing too: a delete whose sync did not happen (an error, a
            // crash between the two) is synced when it is run again.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => self.sync_delete(path).await,
            Err(e) => Err(remote_err(op, e)),
        }
    }

    /// On a file remote, syncs the directory that held the object deleted
    /// at `path` ([`Remote::deleted_from`]): object_store syncs a file
    /// remote's puts (`with_fsync`), not its deletes, and a delete lost to
    /// a power cut would bring back what a prune or a redaction recorded as
    /// gone (and undo the order in which a redaction deletes and writes).
    async fn sync_delete(&self, path: &Path) -> Result<()> {
        match self.deleted_from(path)? {
            Some(dir) => sync_dir(dir, "directory sync after a delete").await,
            None => Ok(()),
        }
    }

    /// The directory of a file remote that holds (or held) the object at
    /// `path`, as the store maps it; `None` on other remotes.
    fn deleted_from(&self, path: &Path) -> Result<Option<std::path::PathBuf>> {
        Ok(self
            .local_file(path)?
            .and_then(|file| file.parent().map(|d| d.to_owned())))
    }

    /// Deletes the chain segment starting at snapshot `first`. Missing is
    /// fine.
    pub async fn delete_segment(&self, agent: &AgentId, first: u64) -> Result<()> {
        self.delete_object("delete segment", &self.segment_path(agent, first))
            .await
    }

    /// Bytes `range` of one pack part (a ranged GET), if the part exists.
    /// A range past the part's end is an error from the store.
    pub async fn get_pack_range(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        part: u32,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        let own = self.pack_path(agent, seq, envelope, part);
        self.own_or_batched(
            agent,
            (seq, envelope, part),
            || Box::pin(self.ranged("get pack range", &own, range.clone())),
            |name, place| {
                let range = range.clone();
                Box::pin(async move {
                    let Some(r) = place.to_batch(&range) else {
                        return Err(remote_err(
                            "get pack range",
                            format!(
                                "bytes {range:?} of snapshot {seq}'s part in its batch: not there"
                            ),
                        ));
                    };
                    self.batch_range(agent, &name, r).await
                })
            },
        )
        .await
    }

    /// Bytes `range` of the object at `path` (a ranged GET), if present.
    async fn ranged(
        &self,
        op: &str,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        match self.store.get_range(path, range).await {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err(op, e)),
        }
    }

    fn checkpoint_path(&self, agent: &AgentId, seq: u64) -> Path {
        self.agent_dir(agent)
            .join("checkpoints")
            .join(format!("{seq:020}.json"))
    }

    /// Stores a signed checkpoint (idempotent: its content is fixed by the
    /// snapshot and the signing time; a later one for the same snapshot
    /// replaces it harmlessly).
    pub async fn put_checkpoint(&self, agent: &AgentId, seq: u64, json: Vec<u8>) -> Result<()> {
        self.put("put checkpoint", &self.checkpoint_path(agent, seq), json)
            .await
    }

    /// A checkpoint, if present.
    pub async fn get_checkpoint(&self, agent: &AgentId, seq: u64) -> Result<Option<Vec<u8>>> {
        self.get("get checkpoint", &self.checkpoint_path(agent, seq))
            .await
    }

    /// Sequence numbers of the checkpoints present after `after`
    /// (0: all), ascending.
    pub async fn list_checkpoints(&self, agent: &AgentId, after: u64) -> Result<Vec<u64>> {
        self.list_seqs(agent, "checkpoints", "list checkpoints", after)
            .await
    }

    fn newest_checkpoint_path(&self, agent: &AgentId) -> Path {
        self.agent_dir(agent).join("checkpoint.json")
    }

    /// Replaces the copy of the newest checkpoint (one object per agent:
    /// what a restore reads instead of listing every checkpoint).
    pub async fn put_newest_checkpoint(&self, agent: &AgentId, json: Vec<u8>) -> Result<()> {
        self.put(
            "put newest checkpoint",
            &self.newest_checkpoint_path(agent),
            json,
        )
        .await
    }

    /// The copy of the newest checkpoint, if a writer ever stored one.
    pub async fn get_newest_checkpoint(&self, agent: &AgentId) -> Result<Option<Vec<u8>>> {
        self.get("get newest checkpoint", &self.newest_checkpoint_path(agent))
            .await
    }

    fn heartbeat_path(&self, agent: &AgentId) -> Path {
        self.agent_dir(agent).join("writer.json")
    }

    /// Replaces the writer's heartbeat (one small object per agent, which
    /// a takeover watches).
    pub async fn put_heartbeat(&self, agent: &AgentId, json: Vec<u8>) -> Result<()> {
        self.put("put heartbeat", &self.heartbeat_path(agent), json)
            .await
    }

    /// The writer's heartbeat, if one was ever written.
    pub async fn get_heartbeat(&self, agent: &AgentId) -> Result<Option<Vec<u8>>> {
        self.get("get heartbeat", &self.heartbeat_path(agent)).await
    }

    fn forgotten_path(&self, agent: &AgentId, seq: u64) -> Path {
        self.agent_dir(agent)
            .join("forgotten")
            .join(format!("{seq:020}.json"))
    }

    /// Stores the signed forget record of snapshot `seq`.
    pub async fn put_forgotten(&self, agent: &AgentId, seq: u64, json: Vec<u8>) -> Result<()> {
        self.put("put forget record", &self.forgotten_path(agent, seq), json)
            .await
    }

    /// The forget record of snapshot `seq`, if present.
    pub async fn get_forgotten(&self, agent: &AgentId, seq: u64) -> Result<Option<Vec<u8>>> {
        self.get("get forget record", &self.forgotten_path(agent, seq))
            .await
    }

    fn forgotten_bundle_path(&self, agent: &AgentId) -> Path {
        self.agent_dir(agent).join("segments").join("forgotten.fgb")
    }

    /// Replaces the forget record bundle (`segment::encode_forgotten`).
    pub async fn put_forgotten_bundle(&self, agent: &AgentId, bytes: Vec<u8>) -> Result<()> {
        self.put(
            "put forget record bundle",
            &self.forgotten_bundle_path(agent),
            bytes,
        )
        .await
    }

    /// The forget record bundle, if present.
    pub async fn get_forgotten_bundle(&self, agent: &AgentId) -> Result<Option<Vec<u8>>> {
        self.get(
            "get forget record bundle",
            &self.forgotten_bundle_path(agent),
        )
        .await
    }

    /// Every forget record present but those `known` (listed, not
    /// fetched): (seq, JSON).
    pub async fn list_forgotten(
        &self,
        agent: &AgentId,
        known: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let seqs = self
            .list_seqs(agent, "forgotten", "list forget records", 0)
            .await?;
        // Some at once (one record per forgotten snapshot: thousands for
        // an agent that keeps its last few).
        let fetched: Vec<Option<(u64, Vec<u8>)>> =
            futures::stream::iter(seqs.into_iter().filter(|s| !known(*s)))
                .map(|seq| async move {
                    let got = self.get_forgotten(agent, seq).await?;
                    Ok::<_, Error>(got.map(|b| (seq, b)))
                })
                .buffered(16)
                .try_collect()
                .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// Stores a signed redaction record under `name`.
    pub async fn put_redaction(&self, agent: &AgentId, name: &str, json: Vec<u8>) -> Result<()> {
        self.put(
            "put redaction record",
            &self.agent_dir(agent).join("redactions").join(name),
            json,
        )
        .await
    }

    /// Every redaction record present but those whose name is `known`
    /// (listed, not fetched), with its name, in name order.
    pub async fn list_redactions(
        &self,
        agent: &AgentId,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = self.agent_dir(agent).join("redactions");
        let mut paths = Vec::new();
        let mut s = self.store.list(Some(&dir));
        while let Some(m) = s.next().await {
            paths.push(
                m.map_err(|e| list_err("list redaction records", &dir, e))?
                    .location,
            );
        }
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let name = p.filename().unwrap_or_default().to_owned();
            if known(&name) {
                continue;
            }
            if let Some(b) = self.get("get redaction record", &p).await? {
                out.push((name, b));
            }
        }
        Ok(out)
    }

    /// Deletes every pack part of snapshot `seq` (at least parts
    /// `0..at_least`, which its part index names, whether or not part 0
    /// is still there); returns how many there were. Records an upload
    /// batch holds leave it by [`Remote::leave_batches`].
    pub async fn delete_packs(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
        at_least: u32,
    ) -> Result<u32> {
        // Parts are read from 0 until the first missing: counted first,
        // then deleted from the last, so that one cut short leaves parts
        // 0.. that the next prune finds again (deleted from 0, a cut left
        // the later parts where nothing looks for them but the index).
        let mut parts = 0;
        loop {
            let path = self.pack_path(agent, seq, envelope, parts);
            match self.store.head(&path).await {
                Ok(_) => parts += 1,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(remote_err("head pack", e)),
            }
        }
        let parts = parts.max(at_least);
        for part in (0..parts).rev() {
            self.delete_object("delete pack", &self.pack_path(agent, seq, envelope, part))
                .await?;
        }
        Ok(parts)
    }

    fn batch_path(&self, agent: &AgentId, name: &BatchName, ext: &str) -> Path {
        let BatchName {
            first,
            last,
            hash,
            generation,
        } = name;
        let range = segment::first_of(*first);
        let h = crate::hex::encode(hash);
        self.agent_dir(agent)
            .join("batches")
            .join(format!("{range:020}"))
            .join(format!("{first:020}-{last:020}-{h}-{generation:04}.{ext}"))
    }

    /// Uploads the batch part and batch index of snapshots
    /// `batch.first..=batch.last()` (`batch::Builder`), the last of which
    /// hashes to `last_hash`: the part first, so that an index found names
    /// a part there. Idempotent: both are fixed by the snapshots.
    pub async fn put_batch(
        &self,
        agent: &AgentId,
        last_hash: &[u8; 32],
        part: PutPayload,
        batch: &Batch,
    ) -> Result<()> {
        let name = BatchName {
            first: batch.first,
            last: batch.last(),
            hash: last_hash[..16].try_into().expect("16"),
            generation: 0,
        };
        self.put_batch_as(agent, &name, part, batch).await?;
        self.remember(agent, name, batch);
        Ok(())
    }

    /// Puts a batch's part, then its index, under `name`.
    async fn put_batch_as(
        &self,
        agent: &AgentId,
        name: &BatchName,
        part: impl Into<PutPayload>,
        batch: &Batch,
    ) -> Result<()> {
        self.put(
            "put batch part",
            &self.batch_path(agent, name, "pack"),
            part,
        )
        .await?;
        self.put(
            "put batch index",
            &self.batch_path(agent, name, "bix"),
            batch.encode(),
        )
        .await
    }

    /// Reads snapshot `seq`'s part `part` (or its index) with `own` from
    /// its own objects, else from the batch holding its records with
    /// `batched`. A member remembered from an earlier read goes to its
    /// batch first; one whose batch is gone (rewritten by a prune or a
    /// redaction) is looked for again.
    async fn own_or_batched<'a, T>(
        &'a self,
        agent: &'a AgentId,
        (seq, envelope, part): (u64, &[u8; 32], u32),
        own: impl FnOnce() -> Fetch<'a, T>,
        batched: impl Fn(BatchName, batch::Place) -> Fetch<'a, T>,
    ) -> Result<Option<T>> {
        if part != 0 {
            return own().await;
        }
        if let Some((name, place)) = self.remembered(agent, seq, envelope) {
            if let Some(v) = batched(name, place).await? {
                return Ok(Some(v));
            }
            self.forget(agent, &name);
        }
        if let Some(v) = own().await? {
            return Ok(Some(v));
        }
        match self.find_member(agent, seq, envelope).await? {
            Some((name, place)) => batched(name, place).await,
            None => Ok(None),
        }
    }

    /// Bytes `range` of a batch's part, if it is still there.
    async fn batch_range(
        &self,
        agent: &AgentId,
        name: &BatchName,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Vec<u8>>> {
        if range.is_empty() {
            // Nothing to read (a member that added no object, or a
            // caller asking whether the part is still there), but the
            // part must be there: a `HEAD`.
            let there = match self.store.head(&self.batch_path(agent, name, "pack")).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(remote_err("look for batch part", e)),
            };
            return Ok(there.then(Vec::new));
        }
        self.ranged(
            "get batch part",
            &self.batch_path(agent, name, "pack"),
            range,
        )
        .await
    }

    /// The batches of the aligned range starting at `range` (by their
    /// indexes), newest generation first.
    async fn batches_in(&self, agent: &AgentId, range: u64) -> Result<Vec<BatchName>> {
        let (mut names, _) = self.batch_objects_in(agent, range).await?;
        names.sort_by_key(|n| (std::cmp::Reverse(n.generation), n.first));
        Ok(names)
    }

    /// A batch index, checked against its name; `None` when it is gone
    /// or does not decode (logged: its members are then read as absent,
    /// which a restore reports).
    async fn batch_index(&self, agent: &AgentId, name: &BatchName) -> Result<Option<Batch>> {
        let Some(raw) = self
            .get("get batch index", &self.batch_path(agent, name, "bix"))
            .await?
        else {
            return Ok(None);
        };
        match Batch::decode(name.first, name.last, &raw) {
            Ok(b) => Ok(Some(b)),
            Err(e) => {
                tracing::warn!("{e}; reading around it");
                Ok(None)
            }
        }
    }

    /// The batch that holds the records of snapshot `seq` (whose envelope
    /// hashes to `envelope`), and where, as the remote says now.
    async fn find_member(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
    ) -> Result<Option<(BatchName, batch::Place)>> {
        let names = self.batches_in(agent, segment::first_of(seq)).await?;
        for name in names
            .into_iter()
            .filter(|n| n.first <= seq && seq <= n.last)
        {
            if let Some(b) = self.batch_index(agent, &name).await? {
                self.remember(agent, name, &b);
                if let Some(p) = b.place(seq, envelope) {
                    return Ok(Some((name, p.clone())));
                }
            }
        }
        Ok(None)
    }

    fn remember(&self, agent: &AgentId, name: BatchName, b: &Batch) {
        let mut m = self.batches.by_seq.lock().expect("batches");
        if m.len() >= BATCH_MEMBERS_KEPT {
            m.clear();
        }
        for (seq, member) in (b.first..).zip(&b.members) {
            if let Some(p) = &member.place {
                m.insert((*agent, seq), (name, member.hash, p.clone()));
            }
        }
    }

    fn remembered(
        &self,
        agent: &AgentId,
        seq: u64,
        envelope: &[u8; 32],
    ) -> Option<(BatchName, batch::Place)> {
        let m = self.batches.by_seq.lock().expect("batches");
        m.get(&(*agent, seq))
            .filter(|(_, hash, _)| hash == envelope)
            .map(|(n, _, p)| (*n, p.clone()))
    }

    fn forget(&self, agent: &AgentId, name: &BatchName) {
        self.batches
            .by_seq
            .lock()
            .expect("batches")
            .retain(|(a, _), (n, _, _)| a != agent || n != name);
    }

    /// Takes the records of `leaving` (snapshots, each with its envelope
    /// hash) out of every upload batch holding them, for a prune of those
    /// snapshots there and for a redaction that has written their parts
    /// again under their own names. In each aligned range of `leaving`
    /// and of `checked` (the other snapshots the caller acts on), strictly:
    ///
    /// - of the generations of one batch (same snapshots and hash), only
    ///   the newest is kept: each older one holds what a prune or a
    ///   redaction since took out of it (a run cut short between writing
    ///   the next generation and deleting the old one), and is deleted;
    /// - a batch part without its index (an upload cut short between
    ///   them, or a deletion between them) is deleted: no reader finds
    ///   it, and it may hold records that must go;
    /// - a batch index (the newest generation's) that does not decode is
    ///   an error naming it, before anything of its range is deleted
    ///   (what it holds cannot be told: never passed over);
    /// - the newest generation holding any of `leaving` is written again
    ///   without them, as the next generation (or deleted when no member
    ///   is left), then the old one is deleted, part first.
    ///
    /// Returns how many batches changed.
    pub async fn leave_batches(
        &self,
        agent: &AgentId,
        leaving: &[(u64, [u8; 32])],
        checked: &[u64],
    ) -> Result<u32> {
        let _edit = self.batches.edit.lock().await;
        let mut ranges: Vec<u64> = leaving
            .iter()
            .map(|(s, _)| *s)
            .chain(checked.iter().copied())
            .map(segment::first_of)
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        let mut changed = 0;
        for range in ranges {
            let (indexes, parts) = self.batch_objects_in(agent, range).await?;
            // The newest generation of each batch, read and decoded before
            // anything of the range is deleted: one that does not decode
            // stops the run with the range as it was (an older generation
            // may be what readers still find its members in).
            let mut newest: std::collections::BTreeMap<(u64, u64, [u8; 16]), BatchName> =
                std::collections::BTreeMap::new();
            for n in &indexes {
                let top = newest.entry((n.first, n.last, n.hash)).or_insert(*n);
                if n.generation > top.generation {
                    *top = *n;
                }
            }
            let mut read = Vec::new();
            for name in newest.values() {
                let raw = self
                    .get("get batch index", &self.batch_path(agent, name, "bix"))
                    .await?;
                match raw.map(|r| Batch::decode(name.first, name.last, &r)) {
                    // (Listed, then gone: its batch is left as it is.)
                    None => {}
                    Some(Ok(b)) => read.push((*name, b)),
                    Some(Err(e)) => {
                        return Err(Error::corrupt(
                            format!("upload batch {}-{} on the remote", name.first, name.last),
                            format!("{e}; the records it holds cannot be taken out of it"),
                        ));
                    }
                }
            }
            for orphan in parts.iter().filter(|p| !indexes.contains(p)) {
                self.delete_object("delete batch part", &self.batch_path(agent, orphan, "pack"))
                    .await?;
                changed += 1;
            }
            // Older generations of the batches read: each holds what a
            // later one took out.
            for old in indexes.iter().filter(|n| {
                read.iter().any(|(top, _)| {
                    (top.first, top.last, top.hash) == (n.first, n.last, n.hash)
                        && n.generation < top.generation
                })
            }) {
                self.delete_batch(agent, old).await?;
                changed += 1;
            }
            for (name, b) in read {
                let out: Vec<u64> = leaving
                    .iter()
                    .filter(|(seq, hash)| b.place(*seq, hash).is_some())
                    .map(|(seq, _)| *seq)
                    .collect();
                if out.is_empty() {
                    continue;
                }
                let Some(part) = self
                    .get("get batch part", &self.batch_path(agent, &name, "pack"))
                    .await?
                else {
                    // Its part gone: nothing of it is left to take out.
                    self.delete_batch(agent, &name).await?;
                    changed += 1;
                    continue;
                };
                let (part, left) = batch::without(&b, &part, &out)?;
                if left.holds_any() {
                    let next = BatchName {
                        generation: name.generation + 1,
                        ..name
                    };
                    self.put_batch_as(agent, &next, part, &left).await?;
                }
                self.delete_batch(agent, &name).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The batch indexes and the batch parts in the aligned range starting
    /// at `range`, by name.
    async fn batch_objects_in(
        &self,
        agent: &AgentId,
        range: u64,
    ) -> Result<(Vec<BatchName>, Vec<BatchName>)> {
        let listed = self.list_batches(agent, Ranges::One(range)).await?;
        let named = |ext: &str| -> Vec<BatchName> {
            listed.iter().filter_map(|l| batch_named(l, ext)).collect()
        };
        Ok((named("bix"), named("pack")))
    }

    /// The objects under the agent's `batches/`: all, those of one
    /// aligned range, or those of every range from one on. The one listing of batches;
    /// callers keep the names [`batch_named`] reads.
    async fn list_batches(&self, agent: &AgentId, ranges: Ranges) -> Result<Vec<Path>> {
        let mut dir = self.agent_dir(agent).join("batches");
        let listed = match ranges {
            Ranges::All => self.store.list(Some(&dir)),
            Ranges::One(range) => {
                dir = dir.join(format!("{range:020}"));
                self.store.list(Some(&dir))
            }
            Ranges::From(range) => self
                .store
                .list_with_offset(Some(&dir), &dir.clone().join(format!("{range:020}"))),
        };
        listed
            .map_ok(|m| m.location)
            .map_err(|e| list_err("list batches", &dir, e))
            .try_collect()
            .await
    }

    /// Deletes a batch's objects, its part first (an index left without
    /// its part reads as a batch that lost its members' records).
    async fn delete_batch(&self, agent: &AgentId, name: &BatchName) -> Result<()> {
        self.forget(agent, name);
        self.delete_object("delete batch part", &self.batch_path(agent, name, "pack"))
            .await?;
        self.delete_object("delete batch index", &self.batch_path(agent, name, "bix"))
            .await
    }

    /// Every upload batch index of batches starting at or before `upto`,
    /// read and decoded strictly (`sovseal verify --remote`): the first
    /// that does not decode, names other snapshots than its file, or holds
    /// a member's part index that does not decode, is an error naming its
    /// first snapshot (readers read around it: its members would read as
    /// absent). Returns how many were read, and the members (sequence
    /// number, envelope hash) with a place in a batch whose part is there.
    pub async fn check_batches(
        &self,
        agent: &AgentId,
        upto: u64,
    ) -> Result<(u64, HashSet<(u64, [u8; 32])>)> {
        let (mut read, mut holding) = (0, HashSet::new());
        let mut listed = self.list_batches(agent, Ranges::All).await?;
        let mut seen = HashSet::new();
        // A prune or a redaction writes a batch's next generation before it
        // deletes the older one: a range where a listed index is gone is
        // listed again, to read the generation written meanwhile (three
        // passes; a range still changing after them reads as it was last
        // listed).
        for _ in 0..3 {
            let gone = self
                .check_listed(agent, upto, &listed, &mut seen, &mut holding, &mut read)
                .await?;
            if gone.is_empty() {
                break;
            }
            listed.clear();
            for range in gone {
                listed.extend(self.list_batches(agent, Ranges::One(range)).await?);
            }
        }
        Ok((read, holding))
    }

    /// One pass of [`Remote::check_batches`] over `listed`, for the batch
    /// indexes not `seen` yet. Returns the ranges where a listed index was
    /// gone when read.
    async fn check_listed(
        &self,
        agent: &AgentId,
        upto: u64,
        listed: &[Path],
        seen: &mut HashSet<BatchName>,
        holding: &mut HashSet<(u64, [u8; 32])>,
        read: &mut u64,
    ) -> Result<std::collections::BTreeSet<u64>> {
        let parts: HashSet<BatchName> = listed
            .iter()
            .filter_map(|l| batch_named(l, "pack"))
            .collect();
        let names = listed.iter().filter_map(|l| batch_named(l, "bix"));
        let mut gone = std::collections::BTreeSet::new();
        for name in names.filter(|n| n.first <= upto) {
            if !seen.insert(name) {
                continue;
            }
            let what = |d: String| Error::ChainBroken {
                seq: name.first,
                detail: format!(
                    "the index of its upload batch {}-{} (generation {}) on the remote does not check: {d}",
                    name.first, name.last, name.generation
                ),
            };
            // (Listed, then gone: a prune or a redaction in between.)
            let Some(raw) = self
                .get("get batch index", &self.batch_path(agent, &name, "bix"))
                .await?
            else {
                gone.insert(segment::first_of(name.first));
                continue;
            };
            let b = Batch::decode(name.first, name.last, &raw).map_err(|e| what(e.to_string()))?;
            for (seq, m) in (b.first..).zip(&b.members) {
                if let Some(p) = &m.place {
                    pack::decode_index(seq, &p.index).map_err(|e| what(e.to_string()))?;
                    if parts.contains(&name) {
                        holding.insert((seq, m.hash));
                    }
                }
            }
            *read += 1;
        }
        Ok(gone)
    }

    /// The pack parts of their own that snapshots have on the remote, by
    /// (sequence number, the first 16 bytes of the envelope hash their name
    /// carries, part): a listing of `packs/` (`sovseal verify --remote`).
    pub async fn list_own_parts(&self, agent: &AgentId) -> Result<HashSet<(u64, [u8; 16], u32)>> {
        let dir = self.agent_dir(agent).join("packs");
        let mut out = HashSet::new();
        let mut s = self.store.list(Some(&dir));
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| list_err("list pack parts", &dir, e))?;
            out.extend(part_named(&m.location, &dir));
        }
        Ok(out)
    }

    /// The snapshots after `after` whose records a batch holds, as
    /// [`Remote::list_indexes`] gives them.
    async fn batch_members_after(&self, agent: &AgentId, after: u64) -> Result<Vec<(u64, String)>> {
        let from = segment::first_of(after.saturating_add(1));
        let listed = self.list_batches(agent, Ranges::From(from)).await?;
        let names = listed.iter().filter_map(|l| batch_named(l, "bix"));
        let mut out = Vec::new();
        for name in names.filter(|n| n.last > after) {
            if let Some(b) = self.batch_index(agent, &name).await? {
                self.remember(agent, name, &b);
                for (seq, m) in (b.first..).zip(&b.members) {
                    if seq > after && m.place.is_some() {
                        out.push((seq, crate::hex::encode(&m.hash[..16])));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The raw store, for tests and tools that inspect what is stored.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

/// Syncs directory `dir` of a file remote (one that is not there has
/// nothing to sync); `op` names the step in an error.
async fn sync_dir(dir: std::path::PathBuf, op: &str) -> Result<()> {
    tokio::task::spawn_blocking(move || match crate::fsutil::sync_dir(&dir) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
        synced => synced,
    })
    .await
    .map_err(|e| Error::Invalid(format!("{op}: {e}")))?
}

/// Creates `file` holding `bytes` unless a file of that name exists
/// (`AlreadyExists`), as object_store's file remote does (a staging file
/// `NAME#N`, which its listings skip, then a hard link to the name), except
/// that the name's directory is not synced: the data is, before the name
/// is made ([`Remote::put_envelope_unsynced`]).
fn create_unsynced(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut n = 1u32;
    let (mut f, staging) = loop {
        let mut name = file.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = std::path::PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(f) => break (f, staging),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    };
    let linked = f
        .write_all(bytes)
        .and_then(|_| f.sync_data())
        .and_then(|_| std::fs::hard_link(&staging, file));
    let removed = std::fs::remove_file(&staging);
    linked?;
    removed
}

/// How a cloud store's client retries one request: a few times within
/// 10 s, not its default of up to 10 times within 3 minutes. The
/// replicator retries a failed upload whole with its own backoff (up to
/// 30 s, forever), so longer client retries only hid an unreachable remote
/// from `sovseal status` for up to a minute; a restore or a pull that
/// fails is run again by its caller.
fn request_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file remote's deletes sync the directory the store put the file
    /// in: the one [`Remote::deleted_from`] names holds it.
    #[test]
    fn a_file_remote_syncs_the_directory_that_held_a_deleted_object() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let remote = Remote::open(&url).unwrap();
        let agent = AgentId([7; 32]);
        let path = remote.envelope_path(&agent, 3);
        runtime()
            .unwrap()
            .block_on(remote.put("put", &path, b"{}".to_vec()))
            .unwrap();
        let held = remote.deleted_from(&path).unwrap().unwrap();
        assert!(held.join("00000000000000000003.json").is_file(), "{held:?}");
        assert!(held.starts_with(dir.path().canonicalize().unwrap()));
        runtime()
            .unwrap()
            .block_on(remote.delete_envelope(&agent, 3))
            .unwrap();
        assert!(!held.join("00000000000000000003.json").exists());
        let memory = Remote::open("memory://").unwrap();
        assert!(memory.deleted_from(&path).unwrap().is_none());
    }

    /// An envelope put without its name synced is still a conditional
    /// create: the first is new (its directory made by a put that syncs it),
    /// the same bytes again are already there, other bytes a conflict that
    /// leaves the first in place; no staging file stays behind, and the
    /// listing shows the envelopes alone.
    #[test]
    fn an_unsynced_envelope_put_is_a_conditional_create() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::open(&format!("file://{}", dir.path().display())).unwrap();
        let agent = AgentId([7; 32]);
        let rt = runtime().unwrap();
        let put = |seq, json: &[u8]| {
            rt.block_on(remote.put_envelope_unsynced(&agent, seq, json.to_vec()))
                .unwrap()
        };
        assert!(matches!(put(1, b"{\"a\":1}"), Created::New));
        assert!(matches!(put(2, b"{\"b\":2}"), Created::New));
        assert!(matches!(put(2, b"{\"b\":2}"), Created::AlreadyThere));
        assert!(matches!(put(2, b"{\"c\":3}"), Created::Conflict));
        rt.block_on(remote.sync_envelopes(&agent)).unwrap();
        let file = remote
            .local_file(&remote.envelope_path(&agent, 2))
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"b\":2}");
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A staging file a crash left: the next put stages beside it, and
        // listings skip it.
        let stale = file.with_file_name("00000000000000000003.json#1");
        std::fs::write(&stale, b"torn").unwrap();
        assert!(matches!(put(3, b"{\"d\":4}"), Created::New));
        assert_eq!(std::fs::read(&stale).unwrap(), b"torn");
        let listed = rt.block_on(remote.list_envelopes(&agent, 0, 100)).unwrap();
        assert_eq!(listed, vec![1, 2, 3]);
    }
}

//! Imports of a region whose command API runs as several replicas: the uploaded file is
//! kept in the keyspace ([`ImportPayloads`]) as well as on the receiving replica's disk,
//! and a job runs under a lease, so whichever replica holds it runs (or resumes) the job,
//! fetching the file when it is not the one that received it. A replica that dies
//! mid-job lets its lease lapse and another resumes from the last checkpoint, the rows
//! after it answered from their idempotency records.

use std::path::Path;
use std::sync::Arc;

use stockflow_storage::ports::{ImportPayloads, LeaseStore, PAYLOAD_CHUNK_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::io_error;
use crate::error::ApiResult;
use crate::workers::leases::{LEASE_RENEW_EVERY, LEASE_TTL};

/// The shared half of a region's imports.
pub struct Shared {
    payloads: Arc<dyn ImportPayloads>,
    leases: Arc<dyn LeaseStore>,
    /// This replica, as its leases name it.
    member: String,
}

/// A job this replica holds: `stop` is cancelled when the process stops or the lease is
/// lost (another replica may then run the job); dropping it gives the lease up.
pub struct Held {
    pub stop: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
    release: Option<(Arc<dyn LeaseStore>, String, String)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        if let Some((leases, group, member)) = self.release.take() {
            tokio::spawn(async move {
                let _ = leases.release(&group, 0, &member).await;
            });
        }
    }
}

fn group(id: &str) -> String {
    format!("import:{id}")
}

fn chunks_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(PAYLOAD_CHUNK_BYTES as u64)).unwrap_or(u32::MAX)
}

impl Shared {
    /// Files in `payloads`, jobs leased in `leases` as `member`.
    pub fn new(
        payloads: Arc<dyn ImportPayloads>,
        leases: Arc<dyn LeaseStore>,
        member: String,
    ) -> Self {
        Self {
            payloads,
            leases,
            member,
        }
    }

    /// Stores the file at `path` as job `id`'s, before the job exists.
    pub async fn upload(&self, id: &str, path: &Path) -> ApiResult<()> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io_error("read an import file"))?;
        let mut buf = vec![0u8; PAYLOAD_CHUNK_BYTES];
        for n in 0u32.. {
            let mut filled = 0;
            while filled < buf.len() {
                let read = file
                    .read(&mut buf[filled..])
                    .await
                    .map_err(io_error("read an import file"))?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            if filled == 0 {
                break;
            }
            self.payloads.put_chunk(id, n, &buf[..filled]).await?;
            if filled < buf.len() {
                break;
            }
        }
        Ok(())
    }

    /// Writes job `id`'s file (`bytes` long) to `path` from the keyspace; false when a
    /// chunk is missing (the job was finished and its file removed).
    pub async fn fetch(&self, id: &str, bytes: u64, path: &Path) -> ApiResult<bool> {
        let partial = path.with_extension("fetching.partial");
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(io_error("write an import file"))?;
        for n in 0..chunks_of(bytes) {
            let Some(chunk) = self.payloads.chunk(id, n).await? else {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Ok(false);
            };
            file.write_all(&chunk)
                .await
                .map_err(io_error("write an import file"))?;
        }
        file.sync_all()
            .await
            .map_err(io_error("write an import file"))?;
        tokio::fs::rename(&partial, path)
            .await
            .map_err(io_error("write an import file"))?;
        Ok(true)
    }

    /// Removes a finished job's file from the keyspace.
    pub async fn remove(&self, id: &str, bytes: u64) -> ApiResult<()> {
        Ok(self.payloads.remove_payload(id, chunks_of(bytes)).await?)
    }

    /// Takes job `id`'s lease, renewed until the returned hold is dropped; `None` while
    /// another replica holds it.
    pub async fn hold(&self, id: &str, shutdown: &CancellationToken) -> ApiResult<Option<Held>> {
        let ttl = u32::try_from(LEASE_TTL.as_secs()).unwrap_or(6);
        let group = group(id);
        if !self.leases.acquire(&group, 0, &self.member, ttl).await? {
            return Ok(None);
        }
        let stop = shutdown.child_token();
        let (leases, member, lost) = (self.leases.clone(), self.member.clone(), stop.clone());
        let renewed_group = group.clone();
        let renewer = tokio::spawn(async move {
            let mut confirmed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(LEASE_RENEW_EVERY).await;
                match leases.renew(&renewed_group, 0, &member, ttl).await {
                    Ok(true) => confirmed = tokio::time::Instant::now(),
                    // Another replica has it: stop before writing another checkpoint.
                    Ok(false) => break,
                    Err(e) if confirmed.elapsed() + LEASE_RENEW_EVERY >= LEASE_TTL => {
                        tracing::warn!(group = %renewed_group, error = %e, "cannot renew an import's lease; giving the job up");
                        break;
                    }
                    Err(_) => {}
                }
            }
            lost.cancel();
        });
        Ok(Some(Held {
            stop,
            renewer,
            release: Some((self.leases.clone(), group, self.member.clone())),
        }))
    }
}

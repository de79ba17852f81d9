//! Records kept by (tenant, name) as JSON with their revision: rules and
//! webhooks. Each kind has a table `(tenant, name, spec, revision)`, one
//! partition per tenant clustered by name, so a listing is one range read
//! and needs no index table; every write is a lightweight transaction on
//! the revision.

use scylla::statement::prepared::PreparedStatement;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_registry::{Expect, RegistryError};

use super::{ANY_ATTEMPTS, ScyllaRegistryStore, conflict, to_i64};
use crate::ScyllaError;

/// The statements of one kind's table.
pub(super) struct Statements<'a> {
    pub(super) kind: &'static str,
    pub(super) insert: &'a PreparedStatement,
    pub(super) update: &'a PreparedStatement,
    pub(super) get: &'a PreparedStatement,
    pub(super) delete: &'a PreparedStatement,
    pub(super) list_first: &'a PreparedStatement,
    pub(super) list_after: &'a PreparedStatement,
}

fn decode<T: DeserializeOwned>(kind: &str, spec: &str) -> Result<T, ScyllaError> {
    serde_json::from_str(spec).map_err(|e| ScyllaError::Decode(format!("corrupt {kind}: {e}")))
}

impl ScyllaRegistryStore {
    /// Writes `record` at (tenant, name) if `expect` holds.
    pub(super) async fn put_named<T: Serialize>(
        &self,
        st: &Statements<'_>,
        (tenant, name, revision): (&str, &str, u64),
        record: &T,
        expect: Expect,
    ) -> Result<(), RegistryError> {
        let spec = serde_json::to_string(record)
            .map_err(|e| RegistryError::Internal(format!("encoding {}: {e}", st.kind)))?;
        let revision = to_i64(revision, "revision")?;
        let insert = (tenant, name, spec.as_str(), revision);
        let update = |expected: i64| (spec.as_str(), revision, tenant, name, expected);
        let what = || format!("{} {tenant:?}/{name:?}", st.kind);
        match expect {
            Expect::Absent => self
                .lwt(st.insert, insert)
                .await?
                .expect_applied(&what(), expect),
            Expect::Revision(want) => {
                let Ok(want) = i64::try_from(want) else {
                    return Err(conflict(&what(), expect, None));
                };
                self.lwt(st.update, update(want))
                    .await?
                    .expect_applied(&what(), expect)
            }
            Expect::Any => {
                for _ in 0..ANY_ATTEMPTS {
                    let out = self.lwt(st.insert, insert).await?;
                    if out.applied {
                        return Ok(());
                    }
                    let Some(found) = out.revision() else {
                        continue;
                    };
                    if self.lwt(st.update, update(found)).await?.applied {
                        return Ok(());
                    }
                }
                Err(RegistryError::Conflict(format!(
                    "{}: still changing after {ANY_ATTEMPTS} attempts",
                    what()
                )))
            }
        }
    }

    /// The record at (tenant, name).
    pub(super) async fn get_named<T: DeserializeOwned>(
        &self,
        st: &Statements<'_>,
        tenant: &str,
        name: &str,
    ) -> Result<Option<T>, RegistryError> {
        let row = self.one::<(String,)>(st.get, (tenant, name)).await?;
        Ok(row.map(|(spec,)| decode(st.kind, &spec)).transpose()?)
    }

    /// Deletes the record at (tenant, name); whether it existed.
    pub(super) async fn delete_named(
        &self,
        st: &Statements<'_>,
        tenant: &str,
        name: &str,
    ) -> Result<bool, RegistryError> {
        Ok(self.lwt(st.delete, (tenant, name)).await?.applied)
    }

    /// Up to `limit` records of `tenant` after `after`, by name, read a
    /// bounded page at a time.
    pub(super) async fn list_named<T, N>(
        &self,
        st: &Statements<'_>,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        name_of: N,
    ) -> Result<Vec<T>, RegistryError>
    where
        T: DeserializeOwned,
        N: Fn(&T) -> String,
    {
        let mut out: Vec<T> = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while out.len() < limit {
            let want = (limit - out.len()).min(super::INDEX_PAGE);
            let want_i32 = i32::try_from(want).unwrap_or(i32::MAX);
            let result = match cursor.as_deref() {
                None => self.cql.execute(st.list_first, (tenant, want_i32)).await?,
                Some(a) => {
                    self.cql
                        .execute(st.list_after, (tenant, a, want_i32))
                        .await?
                }
            };
            let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
            let page: Vec<T> = rows
                .rows::<(String,)>()
                .map_err(ScyllaError::decode)?
                .map(|r| {
                    r.map_err(ScyllaError::decode)
                        .and_then(|(spec,)| decode(st.kind, &spec))
                })
                .collect::<Result<_, _>>()?;
            let ended = page.len() < want;
            cursor = page.last().map(&name_of);
            out.extend(page);
            if ended {
                break;
            }
        }
        Ok(out)
    }
}

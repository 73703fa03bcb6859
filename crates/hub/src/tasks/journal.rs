//! Queries of the task journal.

use ganglion_core::{NodeName, TaskId};
use ganglion_store::{TaskFilter, TaskRecord, TaskStatus};

use super::Tasks;
use crate::Error;

impl Tasks {
    pub async fn get(&self, id: &str) -> Result<TaskRecord, Error> {
        let tid = TaskId::from_string(id).ok_or_else(|| Error::NotFound {
            what: format!("task {id:?}"),
        })?;
        self.store
            .get_task(&tid)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("task {id:?}"),
            })
    }

    pub async fn list(
        &self,
        node: Option<&str>,
        status: Option<TaskStatus>,
    ) -> Result<Vec<TaskRecord>, Error> {
        let node_id = match node {
            None => None,
            Some(n) => {
                let name = NodeName::parse(n).map_err(|_| Error::NotFound {
                    what: format!("node {n:?}"),
                })?;
                let rec = self.store.node_by_name(&name).await?;
                Some(
                    rec.ok_or_else(|| Error::NotFound {
                        what: format!("node {n:?}"),
                    })?
                    .id,
                )
            }
        };
        Ok(self
            .store
            .list_tasks(&TaskFilter {
                node_id,
                status,
                limit: None,
            })
            .await?)
    }
}

//! The requests every part sends, in one place: at most `--dynamodb-concurrency` in flight per
//! process, write units counted, errors mapped to the seam's [`Fault`]s, and the one bounded
//! retry of what DynamoDB leaves unprocessed ([`until_done`]) that batched reads, batched
//! writes and batched statements share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};
use futures_util::future::try_join_all;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::items::{Item, s};
use super::units::{Kind, WriteUnits};
use crate::store::{Fault, StoreError};

/// Keys per `BatchGetItem` (DynamoDB's limit).
const KEYS_PER_GET: usize = 100;
/// Items per `BatchWriteItem` (DynamoDB's limit).
const ITEMS_PER_WRITE: usize = 25;
/// Sends of one batched request before what is still unprocessed fails the call (and the
/// runtime retries the whole write): 8 tries, pausing 50 ms doubling to 2 s between them.
const ATTEMPTS: u32 = 8;

/// A client, its request limit and its write units: what every part of the store shares.
#[derive(Clone)]
pub struct Db {
    pub client: Client,
    permits: Arc<Semaphore>,
    pub units: Arc<WriteUnits>,
}

impl Db {
    pub fn new(client: Client, concurrency: usize) -> Self {
        Db {
            client,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            units: Arc::default(),
        }
    }

    /// A turn to send a request: at most `--dynamodb-concurrency` at once.
    pub async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        self.permits.acquire().await.ok()
    }

    /// An item read with strong consistency.
    pub async fn get_consistent(
        &self,
        table: &str,
        key: &Item,
    ) -> Result<Option<Item>, StoreError> {
        let _permit = self.permit().await;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("GetItem"))?;
        Ok(out.item)
    }

    /// Items by key, in the order asked, leaving out those not found; read consistently when
    /// `consistent` (what correctness depends on is never read otherwise).
    pub async fn get_all(
        &self,
        table: &str,
        keys: Vec<Item>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let chunks = keys.chunks(KEYS_PER_GET).map(|chunk| async move {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(consistent)
                .build()
                .map_err(build("KeysAndAttributes"))?;
            let found = until_done("BatchGetItem", request, |request| async move {
                let got = {
                    let _permit = self.permit().await;
                    self.client
                        .batch_get_item()
                        .request_items(table, request)
                        .send()
                        .await
                        .map_err(sdk("BatchGetItem"))?
                };
                let found: Vec<Item> = got
                    .responses()
                    .and_then(|r| r.get(table))
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let left = got.unprocessed_keys().and_then(|u| u.get(table));
                Ok((found, left.filter(|k| !k.keys().is_empty()).cloned()))
            })
            .await?;
            Ok::<_, StoreError>(found.into_iter().flatten())
        });
        let mut found: Vec<Item> = try_join_all(chunks).await?.into_iter().flatten().collect();
        let order = |item: &Item| {
            keys.iter()
                .position(|k| k.iter().all(|(name, v)| item.get(name) == Some(v)))
        };
        found.sort_by_key(|i| order(i));
        Ok(found)
    }

    /// Puts items with `BatchWriteItem`, 25 to a request, all requests at once (within the
    /// process's limit), counting their write units as `kind`.
    pub async fn put_all(
        &self,
        table: &str,
        items: Vec<Item>,
        kind: Kind,
    ) -> Result<(), StoreError> {
        try_join_all(items.chunks(ITEMS_PER_WRITE).map(|chunk| async move {
            let requests = chunk
                .iter()
                .map(|item| {
                    self.units.item(kind, item);
                    let put = PutRequest::builder().set_item(Some(item.clone())).build();
                    put.map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(build("PutRequest"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            until_done("BatchWriteItem", requests, |requests| async move {
                let out = {
                    let _permit = self.permit().await;
                    self.client
                        .batch_write_item()
                        .request_items(table, requests)
                        .send()
                        .await
                        .map_err(sdk("BatchWriteItem"))?
                };
                let left = out.unprocessed_items().and_then(|u| u.get(table));
                Ok(((), left.filter(|r| !r.is_empty()).cloned()))
            })
            .await
        }))
        .await?;
        Ok(())
    }

    /// Every item under partition key `pk` of a `pk`/`sk` table, or those whose sort key is at
    /// or after `from`; read consistently when `consistent`.
    pub async fn partition(
        &self,
        table: &str,
        pk: &str,
        from: Option<&str>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(table)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(consistent);
        let request = match from {
            None => request.key_condition_expression("pk = :pk"),
            Some(from) => request
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(":from", s(from)),
        };
        self.query(request, None, |_| true).await
    }

    /// Sends a conditional put within the process's limit; `false` when its condition did not
    /// hold.
    pub async fn put_if(&self, put: PutItemFluentBuilder) -> Result<bool, StoreError> {
        let sent = {
            let _permit = self.permit().await;
            put.send().await
        };
        held("PutItem", sent)
    }

    /// Sends a conditional update within the process's limit; `false` when its condition did
    /// not hold.
    pub async fn update_if(&self, update: UpdateItemFluentBuilder) -> Result<bool, StoreError> {
        let sent = {
            let _permit = self.permit().await;
            update.send().await
        };
        held("UpdateItem", sent)
    }

    /// Sends a conditional delete within the process's limit; `false` when its condition did
    /// not hold.
    pub async fn delete_if(&self, delete: DeleteItemFluentBuilder) -> Result<bool, StoreError> {
        let sent = {
            let _permit = self.permit().await;
            delete.send().await
        };
        held("DeleteItem", sent)
    }

    /// Runs a query page after page, keeping items `keep` accepts, until `want` are kept or
    /// the query ends.
    pub async fn query(
        &self,
        mut request: QueryFluentBuilder,
        want: Option<usize>,
        keep: impl Fn(&Item) -> bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = {
                let _permit = self.permit().await;
                request.clone().send().await.map_err(sdk("Query"))?
            };
            out.extend(page.items().iter().filter(|i| keep(i)).cloned());
            if let Some(want) = want.filter(|w| out.len() >= *w) {
                out.truncate(want);
                return Ok(out);
            }
            match page.last_evaluated_key() {
                Some(key) => request = request.set_exclusive_start_key(Some(key.clone())),
                None => return Ok(out),
            }
        }
    }
}

/// Sends `request` until DynamoDB has processed all of it: `send` sends what is left and
/// returns what it got back and what it left unprocessed (throttling), if anything. At most
/// [`ATTEMPTS`] sends, pausing longer each time; what is still left then fails the call as
/// [`Fault::Retry`]. Returns what every send got back.
pub async fn until_done<R, T, F, Fut>(
    op: &'static str,
    request: R,
    mut send: F,
) -> Result<Vec<T>, StoreError>
where
    F: FnMut(R) -> Fut,
    Fut: Future<Output = Result<(T, Option<R>), StoreError>>,
{
    let mut got = Vec::new();
    let mut pending = request;
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        let (answer, left) = send(pending).await?;
        got.push(answer);
        match left {
            None => return Ok(got),
            Some(left) => pending = left,
        }
        if attempt < ATTEMPTS {
            tracing::debug!(
                op,
                attempt,
                "DynamoDB left part of a request unprocessed; retrying"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Err(StoreError::new(
        Fault::Retry,
        format!("dynamodb {op}: still unprocessed after {ATTEMPTS} tries"),
    ))
}

/// What the caller can do about an error DynamoDB answered `code` to.
fn fault_of(code: Option<&str>) -> Fault {
    match code {
        Some("ValidationException") => Fault::BadInput,
        Some(
            "ResourceNotFoundException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "MissingAuthenticationTokenException",
        ) => Fault::Down,
        _ => Fault::Retry,
    }
}

/// Whether a conditional write's condition held: `false` when DynamoDB refused it for that,
/// any other error mapped as [`sdk`] maps it.
fn held<T, E, R>(op: &'static str, sent: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk(op)(e)),
    }
}

/// Maps an SDK error of `op` to the seam's error, the SDK's as its source.
pub fn sdk<E, R>(op: &'static str) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        let fault = fault_of(e.as_service_error().and_then(ProvideErrorMetadata::code));
        StoreError::caused(fault, format!("dynamodb {op}"), e)
    }
}

/// Maps a request that could not be built.
pub fn build(what: &'static str) -> impl FnOnce(aws_sdk_dynamodb::error::BuildError) -> StoreError {
    move |e| StoreError::caused(Fault::BadInput, format!("building a dynamodb {what}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn what_stays_unprocessed_is_sent_again_then_fails_the_call() {
        let done = until_done("Test", 3u32, |left| async move {
            Ok((left, (left > 1).then_some(left - 1)))
        })
        .await;
        assert_eq!(done.unwrap(), [3, 2, 1], "sent until nothing was left");
        let never = until_done("Test", (), |()| async { Ok(((), Some(()))) }).await;
        let error = never.unwrap_err();
        assert_eq!(error.fault(), Fault::Retry);
        assert!(error.to_string().contains("after 8 tries"), "{error}");
        assert_eq!(fault_of(Some("ValidationException")), Fault::BadInput);
        assert_eq!(fault_of(Some("ResourceNotFoundException")), Fault::Down);
        assert_eq!(fault_of(Some("ThrottlingException")), Fault::Retry);
    }
}

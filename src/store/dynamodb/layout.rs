//! Which layout the tables hold, from the `meta` / `layout` item of `state`: its version and
//! shards. Tables of this build's layout are used with their own shards; tables that hold no
//! results yet are marked with this build's layout; any other layout is refused with what to
//! do, never misread.

use super::db::{Db, sdk};
use super::items::{Item, layout_key, n, num, s};
use super::keys::{LAYOUT, MAX_SHARDS, SOURCES_PK, Shards, Tables};
use crate::store::{Fault, StoreError};

/// The layout the `meta` item names, if there is one: its version and shards.
pub async fn read(db: &Db, tables: &Tables) -> Result<Option<(u32, Shards)>, StoreError> {
    let Some(item) = db.get_consistent(&tables.state, &layout_key()).await? else {
        return Ok(None);
    };
    let version: u32 = num(&item, "version")?;
    let shards = Shards {
        shared: clamp(num(&item, "shards").ok()),
        alerts: num(&item, "alert_shards")
            .ok()
            .unwrap_or(1)
            .clamp(1, MAX_SHARDS),
    };
    Ok(Some((version, shards)))
}

fn clamp(shards: Option<u32>) -> u32 {
    shards
        .unwrap_or(super::keys::DEFAULT_SHARDS)
        .clamp(1, MAX_SHARDS)
}

/// The shards of the tables' layout, after marking tables that hold no layout yet with
/// `new`. Refuses tables of another layout.
pub async fn check(
    db: &Db,
    tables: &Tables,
    prefix: &str,
    new: Shards,
) -> Result<Shards, StoreError> {
    loop {
        match read(db, tables).await? {
            Some((LAYOUT, shards)) => return Ok(shards),
            Some((found, _)) => return Err(refused(prefix, found)),
            None => {}
        }
        if holds_layout_1(db, tables).await? {
            return Err(refused(prefix, 1));
        }
        mark(db, tables, LAYOUT, new).await?;
    }
}

/// Marks the tables with `version` and `shards`, unless another process marked them first.
pub async fn mark(
    db: &Db,
    tables: &Tables,
    version: u32,
    shards: Shards,
) -> Result<(), StoreError> {
    let mut item: Item = layout_key();
    item.extend([
        ("version".into(), n(version)),
        ("shards".into(), n(shards.shared)),
        ("alert_shards".into(), n(shards.alerts)),
    ]);
    let put = db
        .client
        .put_item()
        .table_name(&tables.state)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)");
    db.put_if(put).await?;
    Ok(())
}

/// Moves the mark from one version to the next (a migration's last step).
pub async fn remark(db: &Db, tables: &Tables, from: u32, to: u32) -> Result<(), StoreError> {
    db.client
        .update_item()
        .table_name(&tables.state)
        .set_key(Some(layout_key()))
        .update_expression("SET version = :to")
        .condition_expression("version = :from")
        .expression_attribute_values(":from", n(from))
        .expression_attribute_values(":to", n(to))
        .send()
        .await
        .map_err(sdk("UpdateItem"))?;
    Ok(())
}

/// Layout 1 was not marked: it is known by its source registry.
async fn holds_layout_1(db: &Db, tables: &Tables) -> Result<bool, StoreError> {
    let written = db
        .client
        .query()
        .table_name(&tables.state)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s(SOURCES_PK))
        .limit(1)
        .consistent_read(true)
        .send()
        .await
        .map_err(sdk("Query"))?;
    Ok(!written.items().is_empty())
}

/// What to do with tables of layout `found`.
pub fn refused(prefix: &str, found: u32) -> StoreError {
    let what = match found {
        3 => "stop every processor (SIGTERM lets each finish its batch), then `citystream init \
              --migrate` moves them to this layout in place"
            .to_owned(),
        f if f > LAYOUT => "a newer CityStream wrote them: run that build".to_owned(),
        _ => "replay the events into new tables: another --table-prefix, or `citystream \
              destroy --yes` then `citystream init`"
            .to_owned(),
    };
    StoreError::new(
        Fault::Down,
        format!(
            "the tables with prefix {prefix} hold results in layout {found} (this build writes \
             layout {LAYOUT}); {what}"
        ),
    )
}

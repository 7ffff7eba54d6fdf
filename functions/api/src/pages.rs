//! Keyset pagination: a page holds up to `limit` items in id order; `next_cursor` is the last
//! id, signed with the keyring (and bound to the list it came from), so that a cursor cannot
//! be forged or carried to another list, and stops working once its signing key retires.

use crate::{Api, Failure};
use evtrack::keys::keyring::{hidden_row, row_from_hidden};
use serde::Serialize;
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 50;
/// What a page's cursor shows: the last item's public id.
const UUID_BYTES: usize = 16;
pub const MAX_LIMIT: usize = 200;

pub struct Page {
    /// What the cursor is bound to, e.g. `keys:<project>`.
    list: String,
    pub after: Option<Uuid>,
    /// The private row of `after`, when its cursor carried it (`of_rows`).
    pub after_row: Option<u64>,
    pub limit: usize,
}

#[derive(Serialize)]
pub struct PageOf<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl Page {
    pub async fn from_query(
        api: &Api,
        list: String,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, Failure> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| Failure::Invalid(format!("limit is 1 to {MAX_LIMIT}")))?,
        };
        let (mut after, mut after_row) = (None, None);
        if let Some(token) = cursor {
            let (shown, hidden) = api.keyring.verify_hiding(&list, token, UUID_BYTES).await?;
            after = Some(Uuid::from_slice(&shown).map_err(|_| Failure::InvalidCursor)?);
            after_row = row_from_hidden(&hidden).map_err(|_| Failure::InvalidCursor)?;
        }
        Ok(Self { list, after, after_row, limit })
    }

    /// How many items to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    pub async fn of<T>(self, api: &Api, items: Vec<T>, id: impl Fn(&T) -> Uuid) -> Result<PageOf<T>, Failure> {
        self.of_rows(api, items, |item| (id(item), None)).await
    }

    /// As `of`, the cursor also carrying the last item's private row, hidden
    /// (`Keyring::sign_hiding`): the next page starts right after that row even once the row
    /// is gone, where its public id alone would find nothing to start after.
    pub async fn of_rows<T>(
        self,
        api: &Api,
        mut items: Vec<T>,
        at: impl Fn(&T) -> (Uuid, Option<u64>),
    ) -> Result<PageOf<T>, Failure> {
        let next_cursor = if items.len() > self.limit {
            items.truncate(self.limit);
            match items.last().map(at) {
                Some((id, row)) => Some(api.keyring.sign_hiding(&self.list, id.as_bytes(), &hidden_row(row)).await?),
                None => None,
            }
        } else {
            None
        };
        Ok(PageOf { data: items, next_cursor })
    }
}

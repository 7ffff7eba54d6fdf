//! Keyset pagination: a page holds up to `limit` items in id order; `next_cursor` is the last
//! id, signed with the keyring (and bound to the list it came from), so that a cursor cannot
//! be forged or carried to another list, and stops working once its signing key retires.

use crate::{Api, Failure};
use serde::Serialize;
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

pub struct Page {
    /// What the cursor is bound to, e.g. `keys:<project>`.
    list: String,
    pub after: Option<Uuid>,
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
        let after = match cursor {
            None => None,
            Some(token) => {
                let payload = api.keyring.verify(&list, token).await?;
                Some(Uuid::from_slice(&payload).map_err(|_| Failure::InvalidCursor)?)
            }
        };
        Ok(Self { list, after, limit })
    }

    /// How many items to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    pub async fn of<T>(self, api: &Api, mut items: Vec<T>, id: impl Fn(&T) -> Uuid) -> Result<PageOf<T>, Failure> {
        let next_cursor = if items.len() > self.limit {
            items.truncate(self.limit);
            match items.last() {
                Some(last) => Some(api.keyring.sign(&self.list, id(last).as_bytes()).await?),
                None => None,
            }
        } else {
            None
        };
        Ok(PageOf { data: items, next_cursor })
    }
}

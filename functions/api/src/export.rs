//! GDPR access: everything held about one user of one project, as NDJSON lines — the
//! profile, the ids linked to it, its groups, then every event carrying any of those ids
//! (soft-deleted rows included: they are still held), and a closing line with the count so
//! that a reader can tell a complete export from a cut one.

use evtrack::ids::ProjectId;
use evtrack::store::{Store, StoreError, SubjectSlices};
use futures::Stream;
use serde_json::{Value, json};

/// Events per database page.
const PAGE: usize = 500;

enum State {
    Start,
    /// Reading the events found through slice `slice` of the user's ids, after event `after`.
    Events {
        subjects: SubjectSlices,
        slice: usize,
        after: u64,
        count: u64,
    },
    Done,
}

/// The export's lines, each ending in `\n`, read page by page as the stream is consumed.
pub fn user_export(
    store: Store,
    project: ProjectId,
    user_id: String,
) -> impl Stream<Item = Result<String, StoreError>> {
    futures::stream::try_unfold(State::Start, move |state| {
        let (store, user_id) = (store.clone(), user_id.clone());
        async move {
            match state {
                State::Start => {
                    let (profile, links) = store.user_for_export(project, &user_id).await?;
                    let mut text = line(json!({"type": "profile", "userId": user_id, "profile": profile}));
                    text.push_str(&line(json!({"type": "linked_ids", "ids": links.aliases})));
                    // `groupIds` as before group types; `groups` says which type each is of.
                    let mut ids: Vec<&str> = links.groups.iter().map(|(id, _)| id.as_str()).collect();
                    ids.dedup();
                    let groups: Vec<Value> =
                        links.groups.iter().map(|(id, kind)| json!({"groupId": id, "groupType": kind})).collect();
                    text.push_str(&line(json!({"type": "groups", "groupIds": ids, "groups": groups})));
                    let subjects = SubjectSlices::new(&user_id, &links.aliases);
                    Ok(Some((text, State::Events { subjects, slice: 0, after: 0, count: 0 })))
                }
                State::Events { subjects, slice, after, count } => {
                    let (events, next) = store.events_of_subjects(project, &subjects, slice, after, PAGE).await?;
                    let count = count + events.len() as u64;
                    let text: String =
                        events.iter().map(|event| line(json!({"type": "event", "event": event}))).collect();
                    let state = match next {
                        Some(after) => State::Events { subjects, slice, after, count },
                        None if slice + 1 < subjects.len() => {
                            State::Events { subjects, slice: slice + 1, after: 0, count }
                        }
                        None => return Ok(Some((text + &line(json!({"type": "end", "events": count})), State::Done))),
                    };
                    Ok(Some((text, state)))
                }
                State::Done => Ok(None),
            }
        }
    })
}

fn line(value: serde_json::Value) -> String {
    format!("{value}\n")
}

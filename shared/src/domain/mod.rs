//! Types that cross a boundary (HTTP, the queue, the database). They parse on the way in, so code
//! past the boundary never re-checks a level, a permission or a key.

mod api_key;
mod event;
mod level;

pub use api_key::{ApiKey, KeyHash, Permission, Permissions};
pub use event::{
    DecodedMessage, ErrorEvent, StoredEvent, decode_event, decode_message, encode_batch, stored,
};
pub use level::Level;

/// The project every installation starts with (created by the first migration).
pub const DEFAULT_PROJECT_ID: uuid::Uuid = uuid::Uuid::from_u128(1);

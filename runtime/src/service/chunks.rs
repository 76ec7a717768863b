//! Lists answered as a stream of chunks (the CRI `Stream*` RPCs), so that a
//! node with thousands of containers is never one huge message.

use futures::stream::BoxStream;
use tonic::Status;

/// Items per streamed response.
pub(super) const CHUNK: usize = 100;

/// `items` as responses of at most `CHUNK` items each, built as the client
/// reads them; an empty list is one empty response, as a unary list would be.
pub(super) fn chunked<T, R>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> BoxStream<'static, Result<R, Status>>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let mut items = items.into_iter().peekable();
    let mut first = true;
    Box::pin(futures::stream::iter(std::iter::from_fn(move || {
        if items.peek().is_none() && !std::mem::take(&mut first) {
            return None;
        }
        first = false;
        Some(Ok(wrap(items.by_ref().take(CHUNK).collect())))
    })))
}

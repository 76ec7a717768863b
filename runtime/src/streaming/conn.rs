//! What the streaming server reads and writes: a plain or TLS connection.

use tokio::io::{AsyncRead, AsyncWrite};

pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

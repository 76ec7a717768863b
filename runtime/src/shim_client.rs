//! gantryd's side of the shim API (`proto/shim.proto`): length-prefixed
//! protobuf messages over the shim's unix socket.

use std::path::Path;

use gantry_proto::shim::{frame, request, response, Request, Response, MAX_FRAME};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub use gantry_proto::shim::{
    KillRequest, ReopenLogRequest, ShutdownRequest, StartRequest, State, StateRequest, Status, UpdateRequest,
    WaitRequest,
};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("talking to shim: {0}")]
    Io(#[from] std::io::Error),
    #[error("shim sent a malformed answer: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("shim answered with a {0}-byte frame")]
    TooLarge(usize),
    #[error("shim: {0}")]
    Shim(String),
    #[error("shim sent an empty answer")]
    Empty,
}

pub struct ShimClient {
    stream: UnixStream,
}

impl ShimClient {
    pub async fn connect(socket: &Path) -> Result<Self, ShimError> {
        Ok(ShimClient { stream: UnixStream::connect(socket).await? })
    }

    async fn call(&mut self, kind: request::Kind) -> Result<State, ShimError> {
        self.stream.write_all(&frame(&Request { kind: Some(kind) })).await?;
        let len = self.stream.read_u32().await? as usize;
        if len > MAX_FRAME {
            return Err(ShimError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await?;
        match Response::decode(body.as_slice())?.kind {
            Some(response::Kind::State(s)) => Ok(s),
            Some(response::Kind::Error(e)) => Err(ShimError::Shim(e)),
            None => Err(ShimError::Empty),
        }
    }

    pub async fn state(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::State(StateRequest {})).await
    }

    pub async fn start(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::Start(StartRequest { prepare: false })).await
    }

    /// Makes the process without letting it run (its pid in the reply); a
    /// later `start` lets it run.
    pub async fn prepare(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::Start(StartRequest { prepare: true })).await
    }

    pub async fn kill(&mut self, signal: i32) -> Result<State, ShimError> {
        self.call(request::Kind::Kill(KillRequest { signal })).await
    }

    /// Returns once the container has exited.
    pub async fn wait(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::Wait(WaitRequest {})).await
    }

    /// Reopens the container's log file at its path.
    pub async fn reopen_log(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::ReopenLog(ReopenLogRequest {})).await
    }

    /// Applies new cgroup limits.
    pub async fn update(&mut self, update: UpdateRequest) -> Result<State, ShimError> {
        self.call(request::Kind::Update(update)).await
    }

    /// Asks the shim to exit; refused while the container runs.
    pub async fn shutdown(&mut self) -> Result<State, ShimError> {
        self.call(request::Kind::Shutdown(ShutdownRequest {})).await
    }
}

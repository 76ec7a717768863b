//! ListContainers served from the `Listing`'s pre-encoded messages: a tower
//! service in front of the generated `RuntimeServiceServer` that answers
//! that one path with the listing's bytes and passes every other call on.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use gantry_proto::cri::v1::ListContainersRequest;
use prost::Message;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::Status;

use crate::listing::Selected;
use crate::runtime::Runtime;

const LIST_CONTAINERS_PATH: &str = "/runtime.v1.RuntimeService/ListContainers";

/// The runtime service with `ListContainers` answered from a `Listing`'s
/// encoded messages; every other call goes to `inner` (the generated
/// `RuntimeServiceServer`).
#[derive(Clone)]
pub struct ListingServer<S> {
    inner: S,
    runtime: Arc<Runtime>,
    max_decoding_message_size: usize,
    max_encoding_message_size: usize,
}

impl<S> ListingServer<S> {
    pub fn new(inner: S, runtime: Arc<Runtime>, max_message_size: usize) -> Self {
        ListingServer {
            inner,
            runtime,
            max_decoding_message_size: max_message_size,
            max_encoding_message_size: max_message_size,
        }
    }
}

impl<S: NamedService> NamedService for ListingServer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for ListingServer<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != LIST_CONTAINERS_PATH {
            return Box::pin(self.inner.call(req));
        }
        let runtime = self.runtime.clone();
        let (decoding, encoding) = (self.max_decoding_message_size, self.max_encoding_message_size);
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ListCodec).apply_max_message_size_config(Some(decoding), Some(encoding));
            Ok(grpc.unary(ListContainers(runtime), req).await)
        })
    }
}

struct ListContainers(Arc<Runtime>);

impl tonic::server::UnaryService<ListContainersRequest> for ListContainers {
    type Response = Selected;
    type Future = std::future::Ready<Result<tonic::Response<Selected>, Status>>;

    fn call(&mut self, request: tonic::Request<ListContainersRequest>) -> Self::Future {
        let filter = request.into_inner().filter.unwrap_or_default();
        std::future::ready(Ok(tonic::Response::new(self.0.listing.select(&filter))))
    }
}

/// Decodes the request with prost; writes the answer's bytes as they are.
#[derive(Clone, Copy)]
struct ListCodec;
struct ListEncoder;
struct ListDecoder;

impl tonic::codec::Codec for ListCodec {
    type Encode = Selected;
    type Decode = ListContainersRequest;
    type Encoder = ListEncoder;
    type Decoder = ListDecoder;

    fn encoder(&mut self) -> ListEncoder {
        ListEncoder
    }

    fn decoder(&mut self) -> ListDecoder {
        ListDecoder
    }
}

impl tonic::codec::Encoder for ListEncoder {
    type Item = Selected;
    type Error = Status;

    fn encode(&mut self, item: Selected, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl tonic::codec::Decoder for ListDecoder {
    type Item = ListContainersRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // INTERNAL, as tonic's prost codec answers a malformed message
        let request = ListContainersRequest::decode(src).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(request))
    }
}

//! Tributary's wire contracts: the protobuf messages and gRPC services of
//! package `tributary.v1`, generated at build time from `proto/`.
//!
//! This crate holds generated code only. Conversions to the domain model live
//! in `tributary-core`; service implementations live in their own crates.

#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

/// Package `tributary.v1`.
pub mod v1 {
    tonic::include_proto!("tributary.v1");
}

/// Encoded `FileDescriptorSet` of every Tributary proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tributary_descriptor.bin"));

//! vigil-guest (placeholder until the agent lands).
#![no_std]

//! What one store may take: memory for all its memories together, and how
//! many instances, tables and memories it may make.

use wasmtime::ResourceLimiter;

/// The limits of one store. `memory_mb` holds for all its memories
/// together: a component may have several, and each alone could otherwise
/// take all of it. Memory creation counts too (wasmtime asks with a
/// current size of 0).
pub struct Limits {
    memory_left: usize,
}

impl Limits {
    /// Limits with `memory` bytes for all the store's memories.
    pub fn new(memory: usize) -> Limits {
        Limits {
            memory_left: memory,
        }
    }
}

/// A guest went past its `memory_mb`.
#[derive(Debug, thiserror::Error)]
#[error("the handler went past its memory_mb ({0})")]
pub struct PastMemoryLimit(String);

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current);
        if more > self.memory_left || maximum.is_some_and(|max| desired > max) {
            return Err(wasmtime::Error::new(PastMemoryLimit(format!(
                "a memory of {current} bytes asked for {desired}, {} bytes were left",
                self.memory_left
            ))));
        }
        self.memory_left -= more;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(PastMemoryLimit(format!(
            "growing a memory failed: {error}"
        ))))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

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

#[cfg(test)]
mod tests {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, MemorySection,
        MemoryType, Module, TypeSection, ValType,
    };
    use wasmtime::{Engine, Instance, Store};

    use super::*;

    const PAGE: usize = 64 << 10;

    /// A module with `memories` memories of one page each, and for each a
    /// function `grow{i}(pages) -> old size or -1`.
    fn module(memories: u32) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        let (mut functions, mut memory, mut exports, mut code) = (
            FunctionSection::new(),
            MemorySection::new(),
            ExportSection::new(),
            CodeSection::new(),
        );
        for i in 0..memories {
            memory.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            functions.function(0);
            exports.export(&format!("grow{i}"), ExportKind::Func, i);
            let mut grow = Function::new([]);
            grow.instructions().local_get(0).memory_grow(i).end();
            code.function(&grow);
        }
        let mut module = Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&memory)
            .section(&exports)
            .section(&code);
        module.finish()
    }

    fn instantiate(memories: u32, limit: usize) -> wasmtime::Result<(Store<Limits>, Instance)> {
        let engine = Engine::default();
        let module = wasmtime::Module::new(&engine, module(memories))?;
        let mut store = Store::new(&engine, Limits::new(limit));
        store.limiter(|limits| limits);
        let instance = Instance::new(&mut store, &module, &[])?;
        Ok((store, instance))
    }

    #[test]
    fn memory_mb_holds_for_all_memories_together() {
        // Two memories of one page each, in a store allowed four pages.
        let (mut store, instance) = instantiate(2, 4 * PAGE).unwrap();
        let grow0 = instance
            .get_typed_func::<i32, i32>(&mut store, "grow0")
            .unwrap();
        let grow1 = instance
            .get_typed_func::<i32, i32>(&mut store, "grow1")
            .unwrap();
        assert_eq!(grow0.call(&mut store, 1).unwrap(), 1);
        assert_eq!(grow1.call(&mut store, 1).unwrap(), 1);
        // Each memory alone is at two pages, well under four: the second
        // memory's growth counts against the first's.
        let error = grow0.call(&mut store, 1).unwrap_err();
        assert!(
            error.downcast_ref::<PastMemoryLimit>().is_some(),
            "{error:#}"
        );
    }

    #[test]
    fn memories_made_count_against_the_limit_and_their_number() {
        // Creating four one-page memories takes the four pages allowed.
        assert!(instantiate(4, 4 * PAGE).is_ok());
        let error = instantiate(5, 4 * PAGE).err().expect("a fifth page");
        assert!(format!("{error:?}").contains("memory_mb"), "{error:?}");
        // Never more than eight memories, however much memory is allowed.
        assert!(instantiate(8, 64 * PAGE).is_ok());
        assert!(instantiate(9, 64 * PAGE).is_err());
    }
}

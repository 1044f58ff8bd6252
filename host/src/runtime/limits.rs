//! Caps on what a bot's instances may allocate: the sum of every linear
//! memory and every table of the event's store, not each one alone (a
//! component with four memories must not get four times its `memory_mb`),
//! and the shape of a component checked at load (how many memories and
//! tables its core modules define).

use anyhow::Result;

/// Most linear memories the core modules of one component may define.
pub const MAX_MEMORIES: usize = 2;
/// Most tables the core modules of one component may define.
pub const MAX_TABLES: usize = 16;
/// Most table elements of all tables of one event together.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Most core instances one component may create.
pub const MAX_INSTANCES: usize = 32;

/// The bot's memory cap reached: growing would exceed its total.
#[derive(Debug, thiserror::Error)]
#[error("growing memory to {wanted} bytes would pass the bot's cap of {cap} bytes (all its memories together)")]
pub struct MemoryCapReached {
    pub cap: usize,
    pub wanted: usize,
}

/// Counts every memory and table an event's store grows, against the bot's
/// totals.
pub struct BotLimiter {
    memory_cap: usize,
    memory_used: usize,
    table_used: usize,
}

impl BotLimiter {
    pub fn new(memory_cap: usize) -> BotLimiter {
        BotLimiter {
            memory_cap,
            memory_used: 0,
            table_used: 0,
        }
    }

    /// Bytes of linear memory the event's instances hold now.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }
}

impl wasmtime::ResourceLimiter for BotLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let wanted = self.memory_used - current.min(self.memory_used) + desired;
        if wanted > self.memory_cap {
            return Err(wasmtime::Error::new(MemoryCapReached {
                cap: self.memory_cap,
                wanted,
            }));
        }
        self.memory_used = wanted;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("growing memory failed"))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let wanted = self.table_used - current.min(self.table_used) + desired;
        if wanted > MAX_TABLE_ELEMENTS {
            wasmtime::bail!("the bot's tables would hold {wanted} elements, over the host's limit of {MAX_TABLE_ELEMENTS}");
        }
        self.table_used = wanted;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Refuses a component whose core modules define more memories or tables
/// than the host allows, before it is compiled.
pub fn check_shape(bytes: &[u8]) -> Result<()> {
    let mut memories = 0;
    let mut tables = 0;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload? {
            wasmparser::Payload::MemorySection(section) => memories += section.count() as usize,
            wasmparser::Payload::TableSection(section) => tables += section.count() as usize,
            _ => {}
        }
    }
    anyhow::ensure!(
        memories <= MAX_MEMORIES,
        "the component defines {memories} linear memories; the host allows at most {MAX_MEMORIES}"
    );
    anyhow::ensure!(
        tables <= MAX_TABLES,
        "the component defines {tables} tables; the host allows at most {MAX_TABLES}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    fn four_memories() -> Vec<u8> {
        wat::parse_str("(component (core module (memory 1) (memory 1) (memory 1) (memory 1)))")
            .unwrap()
    }

    #[test]
    fn components_with_too_many_memories_are_refused() {
        let error = check_shape(&four_memories()).unwrap_err().to_string();
        assert!(error.contains("4 linear memories"), "{error}");
        let one = wat::parse_str("(component (core module (memory 1) (table 1 funcref)))").unwrap();
        check_shape(&one).unwrap();
    }

    #[test]
    fn the_cap_covers_all_memories_together() {
        let mut limiter = BotLimiter::new(3 << 16);
        assert!(limiter.memory_growing(0, 1 << 16, None).unwrap());
        assert!(limiter.memory_growing(0, 1 << 16, None).unwrap());
        assert!(limiter.memory_growing(1 << 16, 2 << 16, None).unwrap());
        let error = limiter.memory_growing(0, 1 << 16, None).unwrap_err();
        assert!(error.downcast_ref::<MemoryCapReached>().is_some());
        assert_eq!(limiter.memory_used(), 3 << 16);
    }

    #[test]
    fn a_store_with_two_memories_gets_one_total_cap() {
        let engine = wasmtime::Engine::default();
        let wasm = wat::parse_str("(module (memory 5) (memory 5))").unwrap();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut store = wasmtime::Store::new(&engine, BotLimiter::new(8 << 16));
        store.limiter(|l| l);
        let error = wasmtime::Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(
            error.downcast_ref::<MemoryCapReached>().is_some(),
            "10 pages in two memories must not fit a cap of 8: {error:?}"
        );
    }
}

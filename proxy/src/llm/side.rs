//! One background thread with its own Tokio runtime for the AI gateway's refresh loops (JWKS,
//! AWS credentials). They must outlive any config generation and any Pingora worker, and the
//! first config is compiled before Pingora's runtimes exist.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Handle;

fn handle() -> Result<&'static Handle, String> {
    static HANDLE: OnceLock<Result<Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("citoroute-llm-side".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot start the LLM side runtime: {e}")));
                        }
                    }
                })
                .map_err(|e| format!("cannot start the LLM side thread: {e}"))?;
            rx.recv()
                .map_err(|_| "the LLM side thread ended at start".to_string())?
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs `f` on the side runtime for good.
pub fn spawn<F>(f: F) -> Result<(), String>
where
    F: Future<Output = ()> + Send + 'static,
{
    handle()?.spawn(f);
    Ok(())
}

/// Runs `f` on the side runtime and waits for it at most `wait`, from any thread (inside an
/// async runtime too: this blocks the calling thread, never re-enters a runtime). `None` when
/// it did not finish in time; it then goes on in the background.
pub fn run_and_wait<T, F>(f: F, wait: Duration) -> Result<Option<T>, String>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(f.await);
    });
    Ok(rx.recv_timeout(wait).ok())
}

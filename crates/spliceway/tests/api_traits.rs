//! The thread-safety the crate documentation promises (its "Threads, blocking calls, `Send`
//! and `Sync`" section), checked by the compiler: if a change made one of these types lose
//! `Send` or `Sync`, this test would stop compiling.

use spliceway::{
    AdoptError, Adoption, ConnectionEnd, Relay, RelayBuilder, RelayHandle, Route, StatsSnapshot,
};

fn send<T: Send>() {}
fn send_sync<T: Send + Sync>() {}
fn clone<T: Clone>() {}

#[test]
fn handles_are_shared_between_threads() {
    send_sync::<RelayHandle>();
    clone::<RelayHandle>();
}

#[test]
fn a_relay_is_built_on_one_thread_and_run_on_another() {
    send::<Relay>();
    send::<RelayBuilder>();
    send::<Route>();
}

#[test]
fn adoptions_and_their_results_cross_threads() {
    send::<Adoption>();
    send::<AdoptError>();
    send_sync::<ConnectionEnd>();
    send_sync::<StatsSnapshot>();
    // An error from adopt can be boxed like any other.
    fn boxed(e: AdoptError) -> Box<dyn std::error::Error + Send + 'static> {
        Box::new(e)
    }
    let _ = boxed;
}

#[test]
fn a_handle_works_from_another_thread() {
    let relay = Relay::builder()
        .threads(1)
        .build()
        .expect("a relay with no routes builds");
    let handle = relay.handle();
    let stopper = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            assert_eq!(handle.snapshot().active_connections, 0);
            handle.shutdown();
        })
    };
    relay
        .run()
        .expect("the relay runs until the other thread stops it");
    stopper.join().expect("the stopping thread did not panic");
    assert!(handle.is_stopping());
}

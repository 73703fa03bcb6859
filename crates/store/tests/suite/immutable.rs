//! [`ImmutableStore`](ganglion_store::ImmutableStore): the hub-owned paths
//! of each node's mirror.

use ganglion_store::Store;

use crate::common::{T0, joined};

pub async fn add_and_remove_patterns(store: &dyn Store) {
    let node = joined(store, "n1").await;
    assert!(
        store
            .add_immutable(&node.id, "secrets/**", T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_immutable(&node.id, "secrets/**", T0)
            .await
            .unwrap(),
        "added once"
    );
    assert!(store.add_immutable(&node.id, "*.lock", T0).await.unwrap());
    assert_eq!(store.immutable_patterns(&node.id).await.unwrap().len(), 2);
    assert!(store.remove_immutable(&node.id, "*.lock").await.unwrap());
    assert!(!store.remove_immutable(&node.id, "*.lock").await.unwrap());
    assert_eq!(
        store.immutable_patterns(&node.id).await.unwrap(),
        vec!["secrets/**".to_owned()]
    );
}

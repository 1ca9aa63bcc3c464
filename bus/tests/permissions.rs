//! The bus checks who is speaking (`bus::permissions`): the committed authorization
//! block is the one the code generates, anonymous clients are refused, and a service's
//! user may publish its own subjects and receive on its own inboxes, nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use bus::permissions;
use bus::stream::{self, Access, STREAM};
use common::Secret;
use common::events::Subject;
use futures::StreamExt as _;
use testkit::{TestNats, Users, test_password, workspace_root};

const FILE: &str = "infra/k8s/base/nats-authorization.conf";

#[test]
fn the_committed_authorization_block_is_the_generated_one() {
    let path = workspace_root().join(FILE);
    let generated = permissions::authorization_conf();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated,
        "{FILE} is out of date; regenerate it with UPDATE_DOCS=1 cargo test -p bus --test permissions"
    );
}

/// Connects as `user` (with its test password), declaring the stream as a service does.
async fn connect_as(nats: &TestNats, user: &str) -> stream::Nats {
    let access = Access {
        url: nats.url.clone(),
        credentials: Some((user.to_owned(), Secret::new(test_password(user)))),
        ca_file: None,
    };
    stream::connect_with(&access, user, &Default::default())
        .await
        .unwrap()
}

async fn stored(nats: &stream::Nats) -> u64 {
    let mut stream = nats.jetstream.get_stream(STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn anonymous_clients_and_wrong_passwords_are_refused() {
    let nats = TestNats::start_with(Users::Required).await;
    let anonymous = async_nats::connect(nats.url.as_str()).await;
    let error = anonymous.expect_err("an anonymous client connected");
    assert!(
        error.to_string().to_lowercase().contains("authoriz"),
        "{error}"
    );
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("tickets".into(), "a-guess".into())
            .connect(nats.url.as_str())
            .await;
    assert!(wrong.is_err(), "a wrong password connected");
    connect_as(&nats, "tickets").await;
}

#[tokio::test]
async fn a_service_publishes_its_own_subjects_and_no_other() {
    let nats = TestNats::start_with(Users::Required).await;
    let tickets = connect_as(&nats, "tickets").await;
    let admin = connect_as(&nats, "admin").await;
    let ack = tickets
        .jetstream
        .publish(Subject::TicketCreated.as_str(), "{}".into())
        .await
        .unwrap()
        .await;
    assert!(ack.is_ok(), "tickets may publish ticket.created: {ack:?}");
    let before = stored(&admin).await;
    // What orders, expiration, payments and auth say: tickets may not say it.
    for subject in Subject::ALL
        .into_iter()
        .filter(|s| s.publisher() != "tickets")
    {
        let sent = tickets
            .jetstream
            .publish(subject.as_str(), "{}".into())
            .await;
        let acked = match sent {
            Ok(ack) => tokio::time::timeout(Duration::from_secs(1), ack)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        assert!(acked.is_none(), "tickets published {subject}");
    }
    assert_eq!(stored(&admin).await, before, "nothing was stored");
    let mut jetstream = tickets.jetstream.clone();
    jetstream.set_timeout(Duration::from_secs(2));
    assert!(
        jetstream.delete_stream(STREAM).await.is_err(),
        "tickets deleted the stream"
    );
}

#[tokio::test]
async fn a_service_cannot_take_another_services_deliveries() {
    let nats = TestNats::start_with(Users::Required).await;
    let admin = connect_as(&nats, "admin").await;
    let tickets = connect_as(&nats, "tickets").await;
    bus::consumer::durable(
        &admin,
        "payments",
        Subject::OrderCreated,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    admin
        .jetstream
        .publish(Subject::OrderCreated.as_str(), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut jetstream = tickets.jetstream.clone();
    jetstream.set_timeout(Duration::from_secs(2));
    let consumer = jetstream
        .get_consumer_from_stream::<pull::Config, _, _>("payments-order-created", STREAM)
        .await
        .unwrap();
    let pulled = match consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
    {
        Ok(mut messages) => matches!(
            tokio::time::timeout(Duration::from_secs(3), messages.next()).await,
            Ok(Some(Ok(_)))
        ),
        Err(_) => false,
    };
    assert!(!pulled, "tickets pulled payments' delivery");
    // Its own durable it may pull from.
    let own = bus::consumer::durable(
        &tickets,
        "tickets",
        Subject::OrderCreated,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut messages = own.fetch().max_messages(1).messages().await.unwrap();
    assert!(
        matches!(messages.next().await, Some(Ok(_))),
        "tickets pulls its own"
    );
}

#[tokio::test]
async fn a_service_receives_only_on_its_own_inboxes() {
    let nats = TestNats::start_with(Users::Required).await;
    let admin = connect_as(&nats, "admin").await;
    let tickets = connect_as(&nats, "tickets").await;
    let mut own = tickets
        .client
        .subscribe("_INBOX_tickets.probe")
        .await
        .unwrap();
    let mut others = Vec::new();
    for subject in ["_INBOX_orders.probe", "order.created", "ticket.created"] {
        others.push((subject, tickets.client.subscribe(subject).await.unwrap()));
    }
    tickets.client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for subject in [
        "_INBOX_tickets.probe",
        "_INBOX_orders.probe",
        "order.created",
        "ticket.created",
    ] {
        admin.client.publish(subject, "probe".into()).await.unwrap();
    }
    admin.client.flush().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(2), own.next()).await;
    assert!(
        matches!(received, Ok(Some(_))),
        "tickets receives on its inbox"
    );
    for (subject, mut subscriber) in others {
        let next = tokio::time::timeout(Duration::from_millis(500), subscriber.next()).await;
        assert!(
            !matches!(next, Ok(Some(_))),
            "tickets received on {subject}"
        );
    }
}

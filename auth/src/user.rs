//! Users and their queries.

use common::{Error, ResultExt};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A stored user, with the hash of its password.
pub struct StoredUser {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
}

impl StoredUser {
    /// The user with this email (already trimmed and lower-cased), if any.
    pub async fn find_by_email(
        db: impl PgExecutor<'_>,
        email: &str,
    ) -> sqlx::Result<Option<StoredUser>> {
        sqlx::query_as!(
            StoredUser,
            "SELECT id, email, password_hash FROM users WHERE lower(email) = $1",
            email
        )
        .fetch_optional(db)
        .await
    }

    pub async fn email_taken(db: impl PgExecutor<'_>, email: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = $1) AS "taken!""#,
            email
        )
        .fetch_one(db)
        .await
    }

    /// Stores a new user; a second user with the same email (ignoring case) is
    /// refused with `Email in use`, however close together the two sign-ups are.
    pub async fn insert(
        db: impl PgExecutor<'_>,
        email: &str,
        password_hash: &str,
    ) -> common::Result<Uuid> {
        let id = Uuid::new_v4();
        sqlx::query!(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)",
            id,
            email,
            password_hash
        )
        .execute(db)
        .await
        .on_constraint("users_email_key", |_| Error::bad_request("Email in use"))?;
        Ok(id)
    }
}

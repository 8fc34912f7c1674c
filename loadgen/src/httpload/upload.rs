//! Uploads (`http = "upload"`): `POST /api/v1/uploads`, a multipart field `file`.

use goose::goose::{GooseMethod, GooseUser};
use goose::prelude::TransactionResult;

use crate::httpload::shared::{Session, Shared, timed};
use crate::upload::{UPLOAD_BYTES, content_type, multipart_body};

/// Upload one more file.
pub(super) async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    let token = s.token.clone();
    let name = format!("lgh-{}-{}.txt", s.user.index, s.uploads);
    timed(
        shared,
        user,
        "upload",
        GooseMethod::Post,
        "/api/v1/uploads",
        |rb| {
            rb.bearer_auth(token)
                .header("content-type", content_type())
                .body(multipart_body(&name, UPLOAD_BYTES))
        },
    )
    .await?;
    if let Some(s) = user.get_session_data_mut::<Session>() {
        s.uploads += 1;
    }
    Ok(())
}

//! tokio adapter for the Agent Socket Protocol (see the issue "asp-tokio"): not built yet.

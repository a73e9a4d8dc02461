//! smol adapter for the Agent Socket Protocol (see the issue "asp-smol"): not built yet.

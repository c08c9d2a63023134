import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import "./styles.css";

const root = document.getElementById("root")!;

/// What React could not recover from (the screens' own boundary shows the
/// rest): a message and a way back instead of a blank page.
function fatal(error: unknown) {
  console.error(error);
  const box = document.createElement("section");
  box.setAttribute("role", "alert");
  box.className = "card error";
  const title = document.createElement("h2");
  title.textContent = "Something went wrong";
  const text = document.createElement("p");
  text.textContent = error instanceof Error ? error.message : String(error);
  const reload = document.createElement("button");
  reload.type = "button";
  reload.textContent = "Reload";
  reload.onclick = () => window.location.reload();
  box.append(title, text, reload);
  document.body.replaceChildren(box);
}

createRoot(root, { onUncaughtError: fatal }).render(
  <StrictMode>
    <App />
  </StrictMode>,
);

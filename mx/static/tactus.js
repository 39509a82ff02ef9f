// Tactus page behaviour kept out of the HTML (the Content-Security-Policy allows no inline script).
"use strict";

// Forms with data-confirm ask before they submit (skip, cancel, stop, delete).
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// A live part whose session has ended sends the browser to the login page.
document.addEventListener("htmx:responseError", (event) => {
  if (event.detail.xhr.status === 401) {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
  }
});

// Do not replace a live part while the user is typing in it or has a button pressed.
document.addEventListener("htmx:beforeRequest", (event) => {
  const part = event.detail.elt;
  if (part && part.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")) {
    event.preventDefault();
  }
});

// The print button of the records sheet. A script file rather than onclick="…": the Content-Security-Policy
// allows only the dashboard's own script files (dashboard/security_headers.py).
"use strict";
document.querySelectorAll("[data-print]").forEach((button) => {
  button.addEventListener("click", () => window.print());
});

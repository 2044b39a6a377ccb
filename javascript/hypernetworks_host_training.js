// The Train tab inside a host web UI (Forge, Forge Classic, AUTOMATIC1111): start the host's own progress polling
// for a training run. Forge and AUTOMATIC1111 ship start_training_textual_inversion for this; Forge Classic
// removed it with textual-inversion training, so the extension brings its own, on the host's requestProgress.
//
// The run's text (a summary line and the loss plot, as HTML) goes into #hn_train_progress; the host's bar over
// #hn_train_output shows the percentage and ETA; previews arrive in #hn_train_gallery. Idle in the standalone page.
function sdHypernetworksStartTraining() {
    "use strict";
    var args = Array.from(arguments);
    if (window.sdHypernetworksStandalone === true || typeof requestProgress !== "function") {
        return args;
    }
    var app = gradioApp();
    var error = app.querySelector("#hn_train_error");
    if (error) {
        error.innerHTML = "";
    }
    var id = typeof randomId === "function" ? randomId() : "task(" + Math.random().toString(36).slice(2) + ")";
    requestProgress(id, app.getElementById("hn_train_output"), app.getElementById("hn_train_gallery"), function() {}, function(progress) {
        var shown = app.getElementById("hn_train_progress");
        if (shown && typeof progress.textinfo === "string") {
            shown.innerHTML = progress.textinfo;
        }
    });
    args[0] = id;
    return args;
}

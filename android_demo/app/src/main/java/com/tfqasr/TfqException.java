package com.tfqasr;

/** A failure of the native streaming core: the message names the file and the problem. */
public class TfqException extends Exception {
  private static final long serialVersionUID = 1L;

  /** The core's status code (a negative TFQ_STREAM_ERR_* value of tfq/stream.h). */
  private final int status;

  public TfqException(int status, String message) {
    super(message);
    this.status = status;
  }

  public int status() {
    return status;
  }
}

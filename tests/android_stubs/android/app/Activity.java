package android.app;

import android.content.pm.PackageManager;
import android.content.res.AssetManager;
import android.os.Bundle;
import android.view.View;
import java.io.File;

public class Activity {
  protected void onCreate(Bundle savedInstanceState) {}

  protected void onStop() {}

  protected void onDestroy() {}

  public void setContentView(int layoutResID) {}

  public <T extends View> T findViewById(int id) {
    throw new UnsupportedOperationException("stub");
  }

  public final String getString(int resId) {
    throw new UnsupportedOperationException("stub");
  }

  public final String getString(int resId, Object... formatArgs) {
    throw new UnsupportedOperationException("stub");
  }

  public int checkSelfPermission(String permission) {
    throw new UnsupportedOperationException("stub");
  }

  public final void requestPermissions(String[] permissions, int requestCode) {}

  public void onRequestPermissionsResult(int requestCode, String[] permissions,
      int[] grantResults) {}

  public File getFilesDir() {
    throw new UnsupportedOperationException("stub");
  }

  public AssetManager getAssets() {
    throw new UnsupportedOperationException("stub");
  }

  public PackageManager getPackageManager() {
    throw new UnsupportedOperationException("stub");
  }

  public String getPackageName() {
    throw new UnsupportedOperationException("stub");
  }
}
